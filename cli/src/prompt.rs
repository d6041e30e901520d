//! Questions on the terminal and lines from stdin.

use std::io::{self, BufRead, IsTerminal, Read, Write};

use anyhow::Context;
use twofold_protocol::Method;
use zeroize::Zeroizing;

/// Longest line read; a code or a path is far shorter, and the bound keeps a
/// stray pipe from filling memory.
const MAX_LINE: usize = 4096;

/// A current code for `twofold backup-codes` and `twofold disable`: from the
/// app, or, for a user whose only method is e-mail, from a code the daemon
/// sends now. `None` at end of input.
pub async fn current_code(
    proxy: &twofold_protocol::TwofoldProxy<'_>,
) -> anyhow::Result<Option<Zeroizing<String>>> {
    let status = proxy.status().await.map_err(crate::bus::daemon_error)?;
    // A word this command does not know (a newer daemon's method) is skipped.
    let methods: Vec<Method> = status
        .methods
        .split(',')
        .filter_map(Method::parse)
        .collect();
    if methods.contains(&Method::Email) && !methods.contains(&Method::Totp) {
        let question = proxy
            .send_login_code(&status.user, "twofold", "")
            .await
            .map_err(crate::bus::daemon_error)?;
        return ask(&question);
    }
    ask("Current code from your app: ")
}

/// Show `question` where a person will see it without mixing it into piped
/// output, then read one line. `None` at end of input.
pub fn ask(question: &str) -> anyhow::Result<Option<Zeroizing<String>>> {
    if io::stdout().is_terminal() {
        let mut out = io::stdout().lock();
        write!(out, "{question}")?;
        out.flush()?;
    } else if io::stdin().is_terminal() {
        // stdout is a pipe (it carries the results); the question goes to stderr.
        let mut err = io::stderr().lock();
        write!(err, "{question}")?;
        err.flush()?;
    }
    read_line(&mut io::stdin().lock()).context("cannot read from standard input")
}

/// One line without its line ending (`\n` or `\r\n`); `None` at end of
/// input. The buffer is wiped on drop since the line may be a code.
pub fn read_line(input: &mut impl BufRead) -> io::Result<Option<Zeroizing<String>>> {
    // Allocated once at full size so no copy is left behind by a reallocation.
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_LINE + 1));
    // `Read::take` on the reborrow, so `input` stays usable afterwards.
    let n = Read::take(&mut *input, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_LINE {
        skip_rest_of_line(input)?;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the input line is too long",
        ));
    }
    if std::str::from_utf8(&buf).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the input is not valid UTF-8",
        ));
    }
    // Moves the checked bytes into the String without copying them.
    let text = String::from_utf8(std::mem::take(&mut *buf))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the input is not valid UTF-8"))?;
    Ok(Some(Zeroizing::new(text)))
}

fn skip_rest_of_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let (done, used) = {
            let available = input.fill_buf()?;
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, available.len()),
            }
        };
        input.consume(used);
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn line(input: &mut Cursor<Vec<u8>>) -> Option<String> {
        read_line(input).unwrap().map(|s| s.to_string())
    }

    #[test]
    fn reads_lines_without_their_endings() {
        let mut input = Cursor::new(b"123456\n654321\r\nlast".to_vec());
        assert_eq!(line(&mut input).as_deref(), Some("123456"));
        assert_eq!(line(&mut input).as_deref(), Some("654321"));
        assert_eq!(line(&mut input).as_deref(), Some("last"));
        assert_eq!(line(&mut input), None);
    }

    #[test]
    fn an_empty_line_is_not_the_end() {
        let mut input = Cursor::new(b"\n".to_vec());
        assert_eq!(line(&mut input).as_deref(), Some(""));
        assert_eq!(line(&mut input), None);
    }

    #[test]
    fn refuses_an_overlong_line_and_resumes_after_it() {
        let mut data = vec![b'1'; MAX_LINE * 3];
        data.extend_from_slice(b"\nnext\n");
        let mut input = Cursor::new(data);
        assert_eq!(
            read_line(&mut input).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(line(&mut input).as_deref(), Some("next"));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_fine() {
        let mut data = vec![b'a'; MAX_LINE];
        data.push(b'\n');
        let mut input = Cursor::new(data);
        assert_eq!(line(&mut input).map(|s| s.len()), Some(MAX_LINE));
    }

    #[test]
    fn refuses_invalid_utf8() {
        let mut input = Cursor::new(b"\xff\xfe\n".to_vec());
        assert!(read_line(&mut input).is_err());
    }
}
