//! Camera controls (exposure, white balance, power-line frequency, colorimetry…) set
//! by name before streaming, named as `v4l2-ctl --list-ctrls` names them: the driver's
//! name in lower case with `_` for anything else ("White Balance, Automatic" is
//! `white_balance_automatic`). A menu control takes its item's index or name.

use std::fmt::Write as _;

use super::device::{ControlInfo, Device};
use super::sys;
use crate::error::{Error, Result};
use crate::source::CameraControl;

/// `v4l2-ctl`'s form of a control or menu item name.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// The value to write for `value`: an integer in the control's range, a boolean word,
/// or a menu item's name.
fn resolve(info: &ControlInfo, value: &str) -> std::result::Result<i32, String> {
    let number = match (info.kind, value.to_ascii_lowercase().as_str()) {
        (sys::CTRL_TYPE_BOOLEAN, "true" | "on" | "yes") => Some(1),
        (sys::CTRL_TYPE_BOOLEAN, "false" | "off" | "no") => Some(0),
        _ => value.trim().parse::<i32>().ok(),
    };
    let number = match number {
        Some(n) => n,
        None => {
            let wanted = normalize(value);
            info.menu
                .iter()
                .find(|(_, item)| normalize(item) == wanted)
                .map(|(index, _)| *index)
                .ok_or_else(|| {
                    if info.menu.is_empty() {
                        format!("'{value}' is not a number")
                    } else {
                        format!("'{value}' is not one of its items ({})", menu_text(info))
                    }
                })?
        }
    };
    if number < info.minimum || number > info.maximum {
        return Err(format!(
            "{number} is outside its range {}..={}",
            info.minimum, info.maximum
        ));
    }
    if !info.menu.is_empty() && !info.menu.iter().any(|(i, _)| *i == number) {
        return Err(format!(
            "{number} is not one of its items ({})",
            menu_text(info)
        ));
    }
    Ok(number)
}

fn menu_text(info: &ControlInfo) -> String {
    let items: Vec<String> = info.menu.iter().map(|(i, n)| format!("{i} {n}")).collect();
    items.join(", ")
}

/// Set every control in `wanted` on `device`; an unknown name, a read-only control or
/// a value the driver refuses is an error naming the device and the control.
pub fn apply(device: &Device, wanted: &[CameraControl]) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let offered = device.controls();
    let fail = |what: String| Error::Invalid(format!("{}: {what}", device.path().display()));
    for control in wanted {
        let name = normalize(&control.name);
        let info = offered
            .iter()
            .find(|c| normalize(&c.name) == name)
            .ok_or_else(|| {
                let names: Vec<String> = offered.iter().map(|c| normalize(&c.name)).collect();
                fail(format!(
                    "no control '{}' (it has: {})",
                    control.name,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })?;
        if info.read_only || info.kind == sys::CTRL_TYPE_BUTTON {
            return Err(fail(format!("control '{name}' cannot be set")));
        }
        let value =
            resolve(info, &control.value).map_err(|e| fail(format!("control '{name}': {e}")))?;
        device
            .set_control(info.id, value)
            .map_err(|e| fail(format!("control '{name}' = {value}: {e}")))?;
    }
    Ok(())
}

/// Append the controls to a `--list-cameras` report.
pub fn describe(device: &Device, out: &mut String) {
    let controls = device.controls();
    if controls.is_empty() {
        return;
    }
    let _ = writeln!(out, "  controls (--camera-control NAME=VALUE):");
    for c in controls {
        let access = if c.read_only { ", read-only" } else { "" };
        let _ = write!(
            out,
            "    {} = {} ({}..={}{access})",
            normalize(&c.name),
            c.default,
            c.minimum,
            c.maximum
        );
        if !c.menu.is_empty() {
            let _ = write!(out, ": {}", menu_text(&c));
        }
        let _ = writeln!(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: u32, minimum: i32, maximum: i32, menu: &[(i32, &str)]) -> ControlInfo {
        ControlInfo {
            id: 1,
            name: "Y'CbCr Encoding".into(),
            kind,
            minimum,
            maximum,
            default: minimum,
            read_only: false,
            menu: menu.iter().map(|(i, n)| (*i, n.to_string())).collect(),
        }
    }

    #[test]
    fn names_are_normalised_as_v4l2_ctl_does() {
        assert_eq!(normalize("Y'CbCr Encoding"), "y_cbcr_encoding");
        assert_eq!(
            normalize("White Balance, Automatic"),
            "white_balance_automatic"
        );
        assert_eq!(
            normalize("Exposure Time, Absolute"),
            "exposure_time_absolute"
        );
        assert_eq!(normalize("  Rec. 709 "), "rec_709");
        assert_eq!(normalize("quantization"), "quantization");
    }

    #[test]
    fn values_are_numbers_in_range_booleans_or_menu_items() {
        let menu = info(
            sys::CTRL_TYPE_MENU,
            0,
            8,
            &[
                (0, "Default"),
                (1, "ITU-R 601"),
                (2, "Rec. 709"),
                (6, "BT.2020"),
            ],
        );
        assert_eq!(resolve(&menu, "2"), Ok(2));
        assert_eq!(resolve(&menu, "rec_709"), Ok(2));
        assert_eq!(resolve(&menu, "Rec. 709"), Ok(2));
        let gap = resolve(&menu, "5").unwrap_err();
        assert!(gap.contains("not one of its items"), "{gap}");
        let unknown = resolve(&menu, "sRGB").unwrap_err();
        assert!(unknown.contains("2 Rec. 709"), "{unknown}");
        let int = info(sys::CTRL_TYPE_INTEGER, -10, 10, &[]);
        assert_eq!(resolve(&int, "-3"), Ok(-3));
        assert!(resolve(&int, "11").unwrap_err().contains("-10..=10"));
        assert!(resolve(&int, "bright")
            .unwrap_err()
            .contains("not a number"));
        let boolean = info(sys::CTRL_TYPE_BOOLEAN, 0, 1, &[]);
        assert_eq!(resolve(&boolean, "on"), Ok(1));
        assert_eq!(resolve(&boolean, "false"), Ok(0));
    }
}
