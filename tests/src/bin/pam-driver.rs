//! Runs a PAM stack from a test directory through real libpam
//! (`pam_start_confdir`), like pamtester but without touching /etc/pam.d.
//!
//! Prompts and error messages go to stderr, info messages to stdout; each
//! prompt is answered with one line of stdin (bytes as given, no newline);
//! end of input answers with a conversation error. The exit status is the
//! PAM result code of `pam_authenticate` (0 = PAM_SUCCESS).
//!
//! `--threads` prints the host process's thread count and resident memory
//! before `pam_start` and after `pam_end` on stdout, as `threads-before=N
//! threads-after=M rss-before-kb=A rss-after-kb=B peak-rss-kb=C` and the
//! anonymous (heap, stacks, relocated data) and file-backed (code) parts of
//! the resident memory before and after (`anon-before-kb=…`, `file-after-kb=…`),
//! and the open descriptors (`fds-before=N fds-after=M`).
//! `--repeat N` with `--codes FILE` runs N logins in-process, user and code per
//! line of FILE, and prints one line per login (benchmarks): its latency in
//! microseconds and its PAM result. `--start-at MS` (Unix time in
//! milliseconds) waits until then first, so that many drivers start at once.
//! `--no-answer N` makes the conversation return N instead of
//! `PAM_CONV_ERR` when it has no answer (an application whose conversation
//! returns odd codes).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_set_item(pamh: *mut c_void, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut c_void, errnum: c_int) -> *const c_char;
}

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_RHOST: c_int = 4;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

/// Answers for the conversation: scripted lines, or stdin.
struct Answers {
    lines: std::collections::VecDeque<Vec<u8>>,
    from_stdin: bool,
    /// What the conversation returns when it has no answer.
    none: c_int,
}

impl Answers {
    fn next(&mut self) -> Option<Vec<u8>> {
        if let Some(line) = self.lines.pop_front() {
            return Some(line);
        }
        if !self.from_stdin {
            return None;
        }
        let mut line = Vec::new();
        match std::io::stdin().lock().read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(line)
            }
        }
    }
}

extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // A panic must not unwind into libpam: fail the conversation instead.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: libpam passes `num_msg` valid message pointers and a response
        // slot; appdata is the `Answers` this program registered.
        unsafe { converse(num_msg, msg, resp, &mut *appdata.cast::<Answers>()) }
    }))
    .unwrap_or(PAM_CONV_ERR)
}

/// # Safety
/// `msg` must point to `num_msg` valid `PamMessage` pointers (Linux-PAM layout)
/// and `resp` to a writable response pointer.
unsafe fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    answers: &mut Answers,
) -> c_int {
    let Ok(n) = usize::try_from(num_msg) else {
        return PAM_CONV_ERR;
    };
    // SAFETY: calloc of n zeroed responses; libpam frees them (and each resp).
    let replies =
        unsafe { libc::calloc(n.max(1), std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        // SAFETY: i < num_msg, per the caller's contract.
        let m = unsafe { &**msg.add(i) };
        // SAFETY: message text is a NUL-terminated string owned by libpam.
        let text = unsafe { CStr::from_ptr(m.msg) }.to_string_lossy();
        match m.msg_style {
            PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON => {
                eprint!("{text}");
                let _quiet = (m.msg_style == PAM_PROMPT_ECHO_OFF).then(EchoOff::new);
                let answer = answers.next();
                drop(_quiet);
                let Some(answer) = answer else {
                    // SAFETY: frees only what was allocated above; earlier resp strings are ours too.
                    unsafe { free_replies(replies, i) };
                    return answers.none;
                };
                // SAFETY: a malloc'd NUL-terminated copy, freed by libpam.
                unsafe {
                    let copy = libc::calloc(answer.len() + 1, 1).cast::<u8>();
                    if copy.is_null() {
                        free_replies(replies, i);
                        return PAM_BUF_ERR;
                    }
                    std::ptr::copy_nonoverlapping(answer.as_ptr(), copy, answer.len());
                    (*replies.add(i)).resp = copy.cast();
                }
            }
            PAM_ERROR_MSG => eprintln!("{text}"),
            PAM_TEXT_INFO => println!("{text}"),
            _ => {}
        }
    }
    let _ = std::io::stdout().flush();
    // SAFETY: `resp` is a valid out-pointer per the caller's contract.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// # Safety
/// `replies` must come from `calloc` above with at least `filled` entries.
unsafe fn free_replies(replies: *mut PamResponse, filled: usize) {
    for i in 0..filled {
        // SAFETY: entries below `filled` hold null or our calloc'd strings.
        unsafe { libc::free((*replies.add(i)).resp.cast()) };
    }
    // SAFETY: allocated with calloc above.
    unsafe { libc::free(replies.cast()) };
}

/// Terminal echo turned off while it lives (only when stdin is a terminal).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: termios is plain data; tcgetattr fills it or fails on a non-terminal.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid termios pointer.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return Self(None);
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: fd 0 and a valid termios copy.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
        Self(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
            eprintln!();
        }
    }
}

/// A number field of /proc/self/status (`Threads`, `VmRSS` in kB, ...).
fn status_field(name: &str) -> usize {
    twofold_e2e::proc_status_field(None, name) as usize
}

fn threads() -> usize {
    status_field("Threads")
}

struct Args {
    confdir: CString,
    service: CString,
    user: CString,
    rhost: Option<CString>,
    threads: bool,
    repeat: Option<(usize, std::path::PathBuf)>,
    start_at_ms: Option<u64>,
    no_answer: c_int,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args_os().skip(1);
    let (mut confdir, mut service, mut user, mut rhost, mut threads) =
        (None, None, None, None, false);
    let (mut repeat, mut codes, mut start_at_ms) = (None, None, None);
    let mut no_answer = PAM_CONV_ERR;
    let number = |v: std::ffi::OsString| {
        v.to_string_lossy()
            .parse::<u64>()
            .map_err(|e| format!("{}: {e}", v.to_string_lossy()))
    };
    let cstring = |v: std::ffi::OsString| {
        CString::new(v.as_bytes()).map_err(|_| "argument with a NUL byte".to_string())
    };
    while let Some(flag) = it.next() {
        match flag.to_str() {
            Some("--threads") => threads = true,
            Some(
                name @ ("--confdir" | "--service" | "--user" | "--rhost" | "--repeat" | "--codes"
                | "--start-at" | "--no-answer"),
            ) => {
                let value = it.next().ok_or(format!("{name} needs a value"))?;
                match name {
                    "--confdir" => confdir = Some(cstring(value)?),
                    "--service" => service = Some(cstring(value)?),
                    "--user" => user = Some(cstring(value)?),
                    "--rhost" => rhost = Some(cstring(value)?),
                    "--repeat" => repeat = Some(number(value)? as usize),
                    "--start-at" => start_at_ms = Some(number(value)?),
                    "--no-answer" => {
                        no_answer = c_int::try_from(number(value)?).map_err(|e| e.to_string())?;
                    }
                    _ => codes = Some(std::path::PathBuf::from(value)),
                }
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    let repeat = match (repeat, codes) {
        (Some(n), Some(file)) => Some((n, file)),
        (None, None) => None,
        _ => return Err("--repeat and --codes go together".into()),
    };
    Ok(Args {
        confdir: confdir.ok_or("--confdir DIR is required")?,
        service: service.ok_or("--service NAME is required")?,
        user: user.unwrap_or_default(),
        rhost,
        threads,
        repeat,
        start_at_ms,
        no_answer,
    })
}

/// Descriptors open in this process (the directory listing's own counted
/// alike before and after), but for datagram sockets: glibc's connection to
/// syslog (`/dev/log`), which opens at the first log line and stays open or
/// not depending on who logged (libpam's `pam_syslog` closes it again), is
/// the host's; twofold's connections are stream sockets.
fn open_fds() -> usize {
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    // Inode -> type (0002: SOCK_DGRAM), from "Num RefCount Protocol Flags Type St Inode".
    let datagram = |inode: &str| {
        unix.lines().any(|l| {
            l.split_whitespace().nth(6) == Some(inode)
                && l.split_whitespace().nth(4) == Some("0002")
        })
    };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            !target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .is_some_and(datagram)
        })
        .count()
}

/// One pam_start .. pam_authenticate .. pam_end; returns the authenticate result.
fn login(args: &Args, user: &CStr, answers: &mut Answers) -> c_int {
    let conv = PamConv {
        conv: conversation,
        appdata_ptr: (answers as *mut Answers).cast(),
    };
    let mut pamh: *mut c_void = std::ptr::null_mut();
    // SAFETY: all strings are NUL-terminated and outlive the handle; `conv` outlives pam_end below.
    let started = unsafe {
        pam_start_confdir(
            args.service.as_ptr(),
            user.as_ptr(),
            &conv,
            args.confdir.as_ptr(),
            &mut pamh,
        )
    };
    if started != PAM_SUCCESS {
        eprintln!("pam_start_confdir failed: {started}");
        return started;
    }
    if let Some(rhost) = &args.rhost {
        // SAFETY: libpam copies the string.
        unsafe { pam_set_item(pamh, PAM_RHOST, rhost.as_ptr().cast()) };
    }
    // SAFETY: pamh is the live handle from pam_start_confdir.
    let result = unsafe { pam_authenticate(pamh, 0) };
    // SAFETY: pam_strerror returns a static string; pam_end frees the handle, used no more.
    unsafe {
        let text = CStr::from_ptr(pam_strerror(pamh, result))
            .to_string_lossy()
            .into_owned();
        if args.repeat.is_none() {
            eprintln!("pam_authenticate: {text} ({result})");
        }
        pam_end(pamh, result);
    }
    result
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pam-driver: {e}");
            return ExitCode::from(100);
        }
    };
    if let Some((n, file)) = &args.repeat {
        return bench(&args, *n, file);
    }
    let (before, rss_before) = (threads(), status_field("VmRSS"));
    let fds_before = open_fds();
    let (anon_before, file_before) = (status_field("RssAnon"), status_field("RssFile"));
    let mut answers = Answers {
        lines: Default::default(),
        from_stdin: true,
        none: args.no_answer,
    };
    let result = login(&args, &args.user, &mut answers);
    if args.threads {
        println!(
            "threads-before={before} threads-after={} rss-before-kb={rss_before} rss-after-kb={} peak-rss-kb={} \
             anon-before-kb={anon_before} anon-after-kb={} file-before-kb={file_before} file-after-kb={} \
             fds-before={fds_before} fds-after={}",
            threads(),
            status_field("VmRSS"),
            status_field("VmHWM"),
            status_field("RssAnon"),
            status_field("RssFile"),
            open_fds()
        );
    }
    ExitCode::from(u8::try_from(result).unwrap_or(101))
}

/// `n` logins, in process, reading "user code" pairs from `file`.
fn bench(args: &Args, n: usize, file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pam-driver: {}: {e}", file.display());
            return ExitCode::from(100);
        }
    };
    let pairs: Vec<(CString, Vec<u8>)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(u, c)| Some((CString::new(u).ok()?, c.as_bytes().to_vec())))
        .take(n)
        .collect();
    if let Some(at) = args.start_at_ms {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        std::thread::sleep(std::time::Duration::from_millis(at.saturating_sub(now)));
    }
    let mut failures = 0;
    for (user, code) in &pairs {
        let mut answers = Answers {
            lines: [code.clone()].into(),
            from_stdin: false,
            none: args.no_answer,
        };
        let start = std::time::Instant::now();
        let result = login(args, user, &mut answers);
        println!("{} {result}", start.elapsed().as_micros());
        if result != PAM_SUCCESS {
            failures += 1;
        }
    }
    eprintln!(
        "logins={} failures={failures} threads={}",
        pairs.len(),
        threads()
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
