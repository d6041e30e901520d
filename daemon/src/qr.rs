//! The Key URI as a QR code in text, for the command and the login conversation.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// Unicode half blocks, two modules per character, with the quiet zone. Dark
/// modules are drawn as spaces, so it scans on the dark background most
/// terminals and SSH clients use.
pub fn render(uri: &str) -> Result<String, qrcode::types::QrError> {
    Ok(QrCode::new(uri.as_bytes())?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_square_of_half_blocks() {
        let text = super::render(
            "otpauth://totp/twofold:alice%40host?secret=JBSWY3DPEHPK3PXP&issuer=twofold",
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[0].chars().count();
        assert!(width > 20 && lines.iter().all(|l| l.chars().count() == width));
        assert!(
            text.chars()
                .all(|c| matches!(c, ' ' | '█' | '▀' | '▄' | '\n'))
        );
    }
}
