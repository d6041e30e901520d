//! The modules under test side by side (twofold, pam_google_authenticator, pam_oath, pam_permit), and how a run's logins are driven and counted.

use super::*;

/// One login's outcome as pam-driver reports it.
#[derive(Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) micros: u64,
    pub(crate) result: i32,
}

/// The second-factor modules compared, each alone in its stack (after
/// `pam_permit`, which stands in for the password).
pub(crate) struct Modules {
    pub(crate) work: tempfile::TempDir,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) bus: Bus,
    pub(crate) daemon: Daemon,
    pub(crate) store: Box<dyn Store>,
    /// Accounts seeded so far (tfb0 .. tfbN-1), and their secrets.
    pub(crate) secrets: Vec<Vec<u8>>,
    pub(crate) twofold: PamService,
    pub(crate) google: PamService,
    pub(crate) oath: PamService,
    /// pam_permit alone: what libpam and the host cost without a second factor.
    pub(crate) permit: PamService,
}

pub(crate) const GOOGLE: &str = "pam_google_authenticator";
pub(crate) const OATH: &str = "pam_oath";
pub(crate) const TWOFOLD: &str = "pam_twofold";
pub(crate) const PERMIT: &str = "pam_permit";

impl Modules {
    /// `users` synthetic accounts in nss_wrapper, all enrolled in twofold;
    /// the anchors' files are written per phase, for the users it takes.
    pub(crate) fn start(users: usize) -> Result<Modules> {
        Self::start_on(users, None)
    }

    /// The same, with the daemon on `fleet`'s database instead of its files.
    pub(crate) fn start_on(users: usize, fleet: Option<&Fleet>) -> Result<Modules> {
        if !std::path::Path::new(NSS_WRAPPER).exists() {
            bail!("{NSS_WRAPPER} is missing (apt-get install libnss-wrapper)");
        }
        let work = tempfile::tempdir()?;
        let env = synthetic_accounts(work.path(), users)?.to_vec();
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let bus = Bus::start()?;
        let config = fleet.map(Fleet::config).unwrap_or_default();
        let daemon = Daemon::start_with_env(&bus, &config, &env_refs)?;
        let store: Box<dyn Store> = match fleet {
            None => Box::new(FileStore::open(&daemon.state_dir())?),
            Some(f) => Box::new(PgStore::new(&f.store_config())?),
        };
        let google_dir = work.path().join("google");
        std::fs::create_dir(&google_dir)?;
        let oath_file = work.path().join("users.oath");
        std::fs::write(&oath_file, "")?;
        std::fs::set_permissions(&oath_file, std::fs::Permissions::from_mode(0o600))?;
        let twofold = PamService::new("")?;
        // The anchors as their documentation configures them for secrets kept
        // by root: google-authenticator with one file per user (read as root,
        // codes never reused), pam_oath with its one users file.
        let google = PamService::with_stack(&format!(
            "auth required pam_google_authenticator.so secret={}/${{USER}} user=root\n\
             auth required pam_permit.so\n",
            google_dir.display()
        ))?;
        let oath = PamService::with_stack(&format!(
            "auth required pam_oath.so usersfile={} window=1 digits=6\n\
             auth required pam_permit.so\n",
            oath_file.display()
        ))?;
        let mut modules = Modules {
            work,
            env,
            bus,
            daemon,
            store,
            secrets: Vec::new(),
            twofold,
            google,
            oath,
            permit: PamService::with_stack("auth required pam_permit.so\n")?,
        };
        let seeding = std::time::Instant::now();
        for i in 0..users {
            let secret = seed(modules.store.as_ref(), &format!("tfb{i}"), 1 + i as u64)?;
            modules.secrets.push(secret);
        }
        eprintln!(
            "seeded {users} enrollments in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );
        Ok(modules)
    }

    pub(crate) fn service(&self, module: &str) -> &PamService {
        match module {
            GOOGLE => &self.google,
            OATH => &self.oath,
            PERMIT => &self.permit,
            _ => &self.twofold,
        }
    }

    /// Gives `users` (indexes) to the anchors: a google-authenticator file
    /// each, and the pam_oath users file holding exactly them.
    pub(crate) fn anchor_files(&self, users: &[usize]) -> Result<()> {
        let mut oath = String::new();
        for &i in users {
            let secret = &self.secrets[i];
            let file = self.work.path().join("google").join(format!("tfb{i}"));
            let text = format!(
                "{}\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n",
                totp_rs::Secret::from(&secret[..]).to_base32()
            );
            std::fs::write(&file, text)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(oath, "HOTP/T30/6\ttfb{i}\t-\t{hex}")?;
        }
        std::fs::write(self.work.path().join("users.oath"), oath)?;
        Ok(())
    }

    /// Two logins per user, valid for the next half minute at least: the code
    /// of this time step for every user, then the code of the next one.
    pub(crate) fn totp_logins(&self, users: &[usize]) -> Result<Vec<Login>> {
        wait_for_step_margin(20);
        let now = unix_now();
        let mut logins = Vec::with_capacity(users.len() * 2);
        for offset in [0, 30] {
            for &i in users {
                logins.push((
                    format!("tfb{i}"),
                    totp::code_at(&self.secrets[i], SIX, now + offset)?,
                ));
            }
        }
        Ok(logins)
    }

    /// Starts pam-driver on `logins`, in order, for `module`.
    pub(crate) fn spawn(
        &self,
        module: &str,
        logins: &[Login],
        start_at_ms: Option<u64>,
        tag: &str,
    ) -> Result<std::process::Child> {
        let file = self.work.path().join(format!("codes-{tag}"));
        let mut text = String::new();
        for (user, code) in logins {
            writeln!(text, "{user} {code}")?;
        }
        std::fs::write(&file, text)?;
        let service = self.service(module);
        let mut c = self.bus.command(artifacts().pam_driver());
        c.arg("--confdir")
            .arg(service.confdir())
            .args(["--service", &service.name, "--rhost", DEFAULT_RHOST])
            .args(["--repeat", &logins.len().to_string()])
            .arg("--codes")
            .arg(&file)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(at) = start_at_ms {
            c.args(["--start-at", &at.to_string()]);
        }
        Ok(c.spawn()?)
    }

    /// Runs `logins` through `module` from one process; the outcomes in order.
    pub(crate) fn run(&self, module: &str, logins: &[Login]) -> Result<Vec<Outcome>> {
        collect(
            self.spawn(module, logins, None, "sequential")?,
            logins.len(),
        )
    }

    pub(crate) fn daemon_cpu(&self) -> f64 {
        self.daemon.pid().map_or(0.0, cpu_seconds)
    }
}

/// The outcomes pam-driver printed, one per login, checked complete.
pub(crate) fn collect(child: std::process::Child, expected: usize) -> Result<Vec<Outcome>> {
    let out = child.wait_with_output()?;
    let outcomes: Vec<Outcome> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (micros, result) = l.trim().split_once(' ')?;
            Some(Outcome {
                micros: micros.parse().ok()?,
                result: result.parse().ok()?,
            })
        })
        .collect();
    if outcomes.len() != expected {
        bail!(
            "pam-driver reported {} of {expected} logins: {}",
            outcomes.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(outcomes)
}

/// Figures for one module's logins.
pub(crate) struct Figures {
    pub(crate) median_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) per_second: f64,
    pub(crate) cpu_ms: f64,
    pub(crate) refused: usize,
    /// The PAM results of the refused logins, and how many of each.
    pub(crate) refusals: std::collections::BTreeMap<i32, usize>,
}

impl Figures {
    /// "0", or "3 (2 × result 9, 1 × result 7)".
    pub(crate) fn refused_text(&self) -> String {
        if self.refused == 0 {
            return "0".into();
        }
        let parts: Vec<String> = self
            .refusals
            .iter()
            .map(|(result, n)| format!("{n} × PAM result {result}"))
            .collect();
        format!("{} ({})", self.refused, parts.join(", "))
    }
}

pub(crate) fn figures(outcomes: &[Outcome], wall: f64, cpu: f64) -> Figures {
    let mut micros: Vec<u64> = outcomes.iter().map(|o| o.micros).collect();
    micros.sort_unstable();
    Figures {
        median_ms: percentile(&micros, 50.0) as f64 / 1000.0,
        p99_ms: percentile(&micros, 99.0) as f64 / 1000.0,
        per_second: outcomes.len() as f64 / wall,
        cpu_ms: cpu * 1000.0 / outcomes.len() as f64,
        refused: outcomes.iter().filter(|o| o.result != pam::SUCCESS).count(),
        refusals: outcomes.iter().filter(|o| o.result != pam::SUCCESS).fold(
            Default::default(),
            |mut map, o| {
                *map.entry(o.result).or_default() += 1;
                map
            },
        ),
    }
}

/// `logins` spread over `in_flight` drivers started at the same instant, each
/// account's logins in one driver (in order: a later step first would refuse
/// the earlier one, rightly). Outcomes in the order of `logins`, and the wall
/// time from the common start to the last driver's exit.
pub(crate) fn concurrent(
    m: &Modules,
    module: &str,
    logins: &[Login],
    in_flight: usize,
) -> Result<(Vec<Outcome>, f64)> {
    let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); in_flight];
    let mut lane_of = std::collections::HashMap::new();
    for (k, (user, _)) in logins.iter().enumerate() {
        let next = lane_of.len() % in_flight;
        let lane = *lane_of.entry(user.clone()).or_insert(next);
        lanes[lane].push(k);
    }
    run_lanes(m, module, logins, &lanes)
}

/// Runs each lane (indexes into `logins`) in its own driver, all starting at
/// once.
pub(crate) fn run_lanes(
    m: &Modules,
    module: &str,
    logins: &[Login],
    lanes: &[Vec<usize>],
) -> Result<(Vec<Outcome>, f64)> {
    // Time for every driver to start and load its stack before the signal.
    let start_at = unix_millis() + 300 + 5 * lanes.len() as u64;
    let mut children = Vec::new();
    for (n, lane) in lanes.iter().enumerate() {
        let lane_logins: Vec<Login> = lane.iter().map(|&k| logins[k].clone()).collect();
        children.push((
            m.spawn(module, &lane_logins, Some(start_at), &format!("lane{n}"))?,
            lane,
        ));
    }
    gather(children, logins.len(), start_at)
}

/// Each lane's outcomes put back in the order of the logins (`lane` holds
/// their indices), and the wall time since `start_at` (Unix ms).
pub(crate) fn gather(
    children: Vec<(std::process::Child, &Vec<usize>)>,
    total: usize,
    start_at: u64,
) -> Result<(Vec<Outcome>, f64)> {
    let mut outcomes = vec![
        Outcome {
            micros: 0,
            result: -1
        };
        total
    ];
    for (child, lane) in children {
        for (k, outcome) in lane.iter().zip(collect(child, lane.len())?) {
            outcomes[*k] = outcome;
        }
    }
    let wall = (unix_millis().saturating_sub(start_at)) as f64 / 1000.0;
    Ok((outcomes, wall))
}
