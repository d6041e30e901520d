//! The "user" at the keyboard of a real OpenSSH client in the SSH tests and
//! the demo. `ssh` runs it (`SSH_ASKPASS`, `SSH_ASKPASS_REQUIRE=force`) for
//! every prompt, with the prompt text (PAM messages included) as its
//! argument. It hands the prompt to the test over the Unix socket named by
//! `TWOFOLD_ASKPASS_SOCKET` and prints the answer the test sends back.
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(socket) = std::env::var_os("TWOFOLD_ASKPASS_SOCKET") else {
        eprintln!("ssh-askpass: TWOFOLD_ASKPASS_SOCKET is not set");
        return ExitCode::FAILURE;
    };
    let prompt = std::env::args_os().nth(1).unwrap_or_default();
    let answer = (|| -> std::io::Result<Vec<u8>> {
        let mut stream = UnixStream::connect(socket)?;
        stream.write_all(prompt.as_encoded_bytes())?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    })();
    match answer {
        Ok(answer) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&answer);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ssh-askpass: {e}");
            ExitCode::FAILURE
        }
    }
}
