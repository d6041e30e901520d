//! The Key URI as a QR code in text, for the command and the login conversation.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// The QR code of `uri`, drawn both ways an enrollment offer carries it.
pub struct Drawings {
    /// Unicode half blocks, two modules per character, with the quiet zone.
    /// Dark modules are drawn as spaces, so it scans on the dark background
    /// most terminals and SSH clients use; `twofold setup` gives it explicit
    /// colours (`text::qr_in_colour`) and the login offers it the other way
    /// round (`text::qr_inverted`) for light backgrounds.
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
    // Level L (7% may be lost): a code on a screen is not smudged, and the
    // lowest level keeps the drawing small enough for an 80x24 terminal.
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::L)?;
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
    use twofold_protocol::text::{qr_in_colour, qr_inverted};

    /// A typical Key URI as `totp::key_uri` writes it.
    const URI: &str = "otpauth://totp/twofold:alice%40host1.example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=twofold";

    /// Grey levels of a terminal's colours.
    const BLACK: u8 = 0;
    const WHITE: u8 = 255;

    /// What a terminal with default colours `fg` on `bg` shows for `text`
    /// (SGR colour escapes obeyed), as grey pixels: a character cell is 4
    /// pixels wide and 8 high, half blocks fill their half with the
    /// foreground, `#` and full blocks all of it. Framed by 16 pixels of
    /// background, as the terminal around the drawing.
    fn screen(text: &str, fg: u8, bg: u8) -> (usize, usize, Vec<u8>) {
        const W: usize = 4;
        const H: usize = 8;
        const MARGIN: usize = 16;
        let lines: Vec<&str> = text.lines().collect();
        let cols = lines
            .iter()
            .map(|l| strip_escapes(l).chars().count())
            .max()
            .unwrap_or(0);
        let (width, height) = (cols * W + 2 * MARGIN, lines.len() * H + 2 * MARGIN);
        let mut pixels = vec![bg; width * height];
        for (row, line) in lines.iter().enumerate() {
            let (mut cur_fg, mut cur_bg) = (fg, bg);
            let mut col = 0;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    let mut params = String::new();
                    chars.next(); // '['
                    for p in chars.by_ref() {
                        if p == 'm' {
                            break;
                        }
                        params.push(p);
                    }
                    for code in params.split(';') {
                        match code {
                            "0" | "" => (cur_fg, cur_bg) = (fg, bg),
                            "30" | "90" => cur_fg = BLACK,
                            "37" | "97" => cur_fg = WHITE,
                            "40" | "100" => cur_bg = BLACK,
                            "47" | "107" => cur_bg = WHITE,
                            other => panic!("unexpected SGR {other}"),
                        }
                    }
                    continue;
                }
                let (top, bottom) = match c {
                    ' ' => (false, false),
                    '\u{2588}' | '#' => (true, true),
                    '\u{2580}' => (true, false),
                    '\u{2584}' => (false, true),
                    other => panic!("unexpected character {other:?}"),
                };
                for y in 0..H {
                    let on = if y < H / 2 { top } else { bottom };
                    for x in 0..W {
                        let at = (MARGIN + row * H + y) * width + MARGIN + col * W + x;
                        pixels[at] = if on { cur_fg } else { cur_bg };
                    }
                }
                col += 1;
            }
        }
        (width, height, pixels)
    }

    fn strip_escapes(line: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    }

    /// What a phone's scanner reads from the screen, if anything.
    fn scan(text: &str, fg: u8, bg: u8) -> Option<String> {
        let (width, height, pixels) = screen(text, fg, bg);
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
            pixels[y * width + x]
        });
        image
            .detect_grids()
            .first()
            .and_then(|grid| grid.decode().ok())
            .map(|(_, content)| content)
    }

    const DARK_TERMINAL: (u8, u8) = (WHITE, BLACK);
    const LIGHT_TERMINAL: (u8, u8) = (BLACK, WHITE);

    #[test]
    fn the_drawings_scan_on_light_and_dark_backgrounds() {
        let super::Drawings { unicode, ascii } = super::render(URI).unwrap();
        let uri = Some(URI.to_string());
        for (name, drawing) in [("unicode", &unicode), ("ascii", &ascii)] {
            // As drawn (the login over SSH): on the usual dark background.
            let (fg, bg) = DARK_TERMINAL;
            assert_eq!(scan(drawing, fg, bg), uri, "{name} on dark");
            // In explicit colours (`twofold setup`): on both.
            let coloured = qr_in_colour(drawing);
            for (theme, (fg, bg)) in [("dark", DARK_TERMINAL), ("light", LIGHT_TERMINAL)] {
                assert_eq!(scan(&coloured, fg, bg), uri, "{name} in colour on {theme}");
            }
        }
        // The other way round (the login's answer I): on a light background.
        let (fg, bg) = LIGHT_TERMINAL;
        assert_eq!(
            scan(&qr_inverted(&unicode), fg, bg),
            uri,
            "inverted on light"
        );
        // The check can fail: a drawing that is not there does not scan.
        assert_eq!(scan(&" ".repeat(40), fg, bg), None);
    }

    /// The sizes the documentation quotes: a typical URI gives a code of 37
    /// modules (version 5, level L) and 45 with the quiet zone, so the
    /// Unicode drawing is 45 columns by 23 lines (fits 80x24) and the ASCII
    /// one 90 by 45 (two characters a module, one line a row).
    #[test]
    fn the_unicode_drawing_fits_an_80x24_terminal() {
        let super::Drawings { unicode, ascii } = super::render(URI).unwrap();
        let size = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            (lines[0].chars().count(), lines.len())
        };
        assert_eq!(size(&unicode), (45, 23));
        assert_eq!(size(&ascii), (90, 45));
    }

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
                .all(|c| matches!(c, ' ' | '\u{2588}' | '\u{2580}' | '\u{2584}' | '\n'))
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
