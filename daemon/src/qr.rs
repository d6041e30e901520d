//! The Key URI as a QR code in text, for the command and the login conversation.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// The QR code of `uri`, drawn both ways an enrollment offer carries it.
pub struct Drawings {
    /// Unicode half blocks, two modules per character, with the quiet zone.
    /// Dark modules are drawn as spaces, so it scans on the dark background
    /// most terminals and SSH clients use.
    pub unicode: String,
    /// Plain ASCII for terminals without Unicode: two characters per module
    /// (`##` and spaces, the same way round) and one line per row, with the
    /// quiet zone; about twice as wide as the Unicode drawing.
    pub ascii: String,
}

/// Encode `uri` once and draw it both ways.
pub fn render(uri: &str) -> Result<Drawings, qrcode::types::QrError> {
    // Under the fuzzer (cargo fuzz sets `--cfg fuzzing`): the drawing does
    // not depend on the fuzzed arguments, took over half of each run of the
    // dbus_methods target, and is covered by the tests below.
    #[cfg(fuzzing)]
    return Ok(Drawings {
        unicode: uri.to_string(),
        ascii: uri.to_string(),
    });
    #[cfg_attr(fuzzing, allow(unreachable_code))]
    let code = QrCode::new(uri.as_bytes())?;
    let unicode = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    let ascii = code
        .render::<char>()
        .dark_color(' ')
        .light_color('#')
        .module_dimensions(2, 1)
        .quiet_zone(true)
        .build();
    Ok(Drawings { unicode, ascii })
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_square_of_half_blocks() {
        let text = super::render(
            "otpauth://totp/twofold:alice%40host?secret=JBSWY3DPEHPK3PXP&issuer=twofold",
        )
        .unwrap()
        .unicode;
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[0].chars().count();
        assert!(width > 20 && lines.iter().all(|l| l.chars().count() == width));
        assert!(
            text.chars()
                .all(|c| matches!(c, ' ' | '█' | '▀' | '▄' | '\n'))
        );
    }

    #[test]
    fn the_ascii_rendering_is_the_same_code_in_ascii() {
        let uri = "otpauth://totp/twofold:alice%40host?secret=JBSWY3DPEHPK3PXP&issuer=twofold";
        let super::Drawings { unicode, ascii } = super::render(uri).unwrap();
        assert!(ascii.is_ascii() && ascii.chars().all(|c| matches!(c, ' ' | '#' | '\n')));
        let rows: Vec<&str> = ascii.lines().collect();
        let modules = rows.len();
        // Square in modules: two characters wide per module, one row per line;
        // half as many lines in the Unicode one (two rows per character).
        assert!(rows.iter().all(|r| r.len() == 2 * modules));
        assert_eq!(unicode.lines().count(), modules.div_ceil(2));
        assert_eq!(unicode.lines().next().unwrap().chars().count(), modules);
        // The quiet zone is light: drawn with '#', like the Unicode blocks.
        assert!(rows[0].chars().all(|c| c == '#'));
    }
}
