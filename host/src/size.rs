//! `HxW` sizes on the command line.

/// Parse `320x480` (height × width) into `(320, 480)`.
pub fn parse(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("'{text}': expected HEIGHTxWIDTH, e.g. 320x480");
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let h = h.trim().parse().map_err(|_| bad())?;
    let w = w.trim().parse().map_err(|_| bad())?;
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok((h, w))
}

/// `(320, 480)` as `320x480`, the form [`parse`] reads.
pub fn show((h, w): (u32, u32)) -> String {
    format!("{h}x{w}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_height_by_width() {
        assert_eq!(super::parse("320x480"), Ok((320, 480)));
        assert!(super::parse("320").is_err());
        assert!(super::parse("0x4").is_err());
        assert_eq!(super::parse(&super::show((240, 320))), Ok((240, 320)));
    }
}
