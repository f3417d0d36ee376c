//! Choosing what to ask a camera for, from what it offers: the size nearest the
//! request first, then a rate that reaches the requested one, then the preferred pixel
//! format. So a USB camera that offers 1280×720 as YUYV at 10 fps and as MJPEG at
//! 30 fps streams MJPEG at 30, and one that offers both at 30 streams YUYV.

use crate::source::pixfmt::{FourCc, PixelFormat};

/// One size of one format a camera offers, with the frame rates it offers there
/// (empty when the driver does not say).
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub format: PixelFormat,
    pub fourcc: FourCc,
    pub width: u32,
    pub height: u32,
    pub rates: Vec<f32>,
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub width: u32,
    pub height: u32,
    pub rate: f32,
    /// Only this format, when given.
    pub format: Option<PixelFormat>,
}

/// The format, size and rate to set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub format: PixelFormat,
    pub fourcc: FourCc,
    pub width: u32,
    pub height: u32,
    /// `None` when the camera lists no rates for this size.
    pub rate: Option<f32>,
}

/// The offer to take, or `None` when nothing fits (no offers, or none in the requested
/// format).
pub fn choose(offers: &[Offer], request: &Request) -> Option<Choice> {
    offers
        .iter()
        .filter(|o| request.format.is_none_or(|f| f == o.format))
        .map(|o| {
            let size_cost =
                o.width.abs_diff(request.width) as u64 + o.height.abs_diff(request.height) as u64;
            let rate = pick_rate(&o.rates, request.rate);
            // Shortfall below the requested rate, in thousandths of a frame per second.
            let shortfall = rate.map_or(0, |r| ((request.rate - r).max(0.0) * 1000.0) as u64);
            // Between two layouts of one format, planes in their own buffers.
            let layout = usize::from(!o.fourcc.separate_planes());
            let key = (size_cost, shortfall, o.format.preference(), layout);
            (key, o, rate)
        })
        .min_by_key(|(key, _, _)| *key)
        .map(|(_, o, rate)| Choice {
            format: o.format,
            fourcc: o.fourcc,
            width: o.width,
            height: o.height,
            rate,
        })
}

/// The slowest offered rate that reaches `wanted`, else the fastest offered.
fn pick_rate(rates: &[f32], wanted: f32) -> Option<f32> {
    let reaching = rates
        .iter()
        .copied()
        .filter(|&r| r + 1e-3 >= wanted)
        .min_by(f32::total_cmp);
    reaching.or_else(|| rates.iter().copied().max_by(f32::total_cmp))
}

/// The value of a stepwise range nearest `wanted`.
pub fn snap(wanted: u32, min: u32, max: u32, step: u32) -> u32 {
    let v = wanted.clamp(min, max.max(min));
    let step = step.max(1);
    let k = ((v - min) as f64 / step as f64).round() as u32;
    (min + k * step).min(max.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(format: PixelFormat, width: u32, height: u32, rates: &[f32]) -> Offer {
        Offer {
            format,
            fourcc: format.fourcc(),
            width,
            height,
            rates: rates.to_vec(),
        }
    }

    /// A typical UVC webcam: YUYV is rate-limited at large sizes by USB bandwidth.
    fn webcam() -> Vec<Offer> {
        vec![
            offer(PixelFormat::Yuyv, 640, 480, &[30.0, 15.0]),
            offer(PixelFormat::Yuyv, 1280, 720, &[10.0, 5.0]),
            offer(PixelFormat::Mjpeg, 640, 480, &[30.0, 15.0]),
            offer(PixelFormat::Mjpeg, 1280, 720, &[30.0, 15.0]),
            offer(PixelFormat::Grey, 1280, 720, &[60.0]),
        ]
    }

    fn request(width: u32, height: u32, rate: f32) -> Request {
        Request {
            width,
            height,
            rate,
            format: None,
        }
    }

    #[test]
    fn size_then_rate_then_format_preference() {
        let c = choose(&webcam(), &request(1280, 720, 30.0)).unwrap();
        assert_eq!(
            (c.format, c.width, c.height, c.rate),
            (PixelFormat::Mjpeg, 1280, 720, Some(30.0)),
            "MJPEG reaches 30 fps at 720p where YUYV does not"
        );
        let c = choose(&webcam(), &request(640, 480, 30.0)).unwrap();
        assert_eq!(
            c.format,
            PixelFormat::Yuyv,
            "uncompressed when both reach the rate"
        );
        // Asking for 10 fps at 720p: YUYV reaches it and is preferred.
        let c = choose(&webcam(), &request(1280, 720, 10.0)).unwrap();
        assert_eq!((c.format, c.rate), (PixelFormat::Yuyv, Some(10.0)));
        // The nearest size wins over the rate: 800×600 is nearer 640×480.
        let c = choose(&webcam(), &request(800, 600, 30.0)).unwrap();
        assert_eq!((c.width, c.height), (640, 480));
    }

    #[test]
    fn a_requested_format_is_honoured_or_nothing_is_chosen() {
        let mut r = request(1280, 720, 30.0);
        r.format = Some(PixelFormat::Yuyv);
        let c = choose(&webcam(), &r).unwrap();
        assert_eq!(
            (c.format, c.rate),
            (PixelFormat::Yuyv, Some(10.0)),
            "best it has"
        );
        r.format = Some(PixelFormat::Nv12);
        assert_eq!(choose(&webcam(), &r), None);
        assert_eq!(choose(&[], &request(640, 480, 30.0)), None);
    }

    #[test]
    fn grey_only_cameras_still_work_and_unknown_rates_are_accepted() {
        let offers = [offer(PixelFormat::Grey, 752, 480, &[])];
        let c = choose(&offers, &request(640, 480, 30.0)).unwrap();
        assert_eq!((c.format, c.width, c.rate), (PixelFormat::Grey, 752, None));
    }

    #[test]
    fn a_multi_planar_isp_streams_planes_in_their_own_buffers() {
        // An ISP offering NV12 both ways, and YUYV: NV12 in two buffers (NM12).
        let mut nm12 = offer(PixelFormat::Nv12, 640, 480, &[30.0]);
        nm12.fourcc = FourCc::new(b"NM12");
        let offers = [
            offer(PixelFormat::Nv12, 640, 480, &[30.0]),
            nm12,
            offer(PixelFormat::Yuyv, 640, 480, &[30.0]),
        ];
        let mut r = request(640, 480, 30.0);
        r.format = Some(PixelFormat::Nv12);
        assert_eq!(choose(&offers, &r).unwrap().fourcc, FourCc::new(b"NM12"));
        assert_eq!(
            choose(&offers, &request(640, 480, 30.0)).unwrap().format,
            PixelFormat::Yuyv
        );
    }

    #[test]
    fn rates_and_stepwise_sizes() {
        assert_eq!(pick_rate(&[60.0, 30.0, 15.0], 25.0), Some(30.0));
        assert_eq!(pick_rate(&[10.0, 5.0], 30.0), Some(10.0));
        assert_eq!(
            pick_rate(&[29.97], 30.0),
            Some(29.97),
            "shortfall, not refused"
        );
        assert_eq!(pick_rate(&[], 30.0), None);
        assert_eq!(snap(640, 16, 1920, 8), 640);
        assert_eq!(snap(643, 16, 1920, 8), 640);
        assert_eq!(snap(5000, 16, 1920, 8), 1920);
        assert_eq!(snap(1, 48, 4096, 16), 48);
    }
}
