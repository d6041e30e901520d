//! A real PostgreSQL server for the fleet tests: `initdb` into a temporary
//! directory as the unprivileged `postgres` account (the server refuses to
//! run as root), listening only on a Unix socket in that directory, with
//! password (SCRAM) authentication. One cluster is shared by the tests of a
//! process that run at the same time (each test gets its own database); a
//! test that stops the server starts its own.

use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

const SUPERUSER: &str = "postgres";
const PASSWORD: &str = "tf-fleet-test-password";

/// The newest server installed (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "/usr/lib/postgresql: is the postgresql package installed? (scripts/install-deps.sh)",
        )?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .context("no PostgreSQL server in /usr/lib/postgresql")
}

fn uid_gid_of(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").arg(flag).arg(user).output()?;
        if !out.status.success() {
            bail!("no account {user}: is the postgresql package installed?");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// One running server.
pub struct Cluster {
    /// The server's: its data directory (0700) and its socket. Open to
    /// others (0755), as the daemon drops its capabilities before it
    /// connects and is then an "other" here.
    dir: tempfile::TempDir,
    /// Root's: the daemon's copy of the password.
    secrets: tempfile::TempDir,
    bin: PathBuf,
    /// Also listening on 127.0.0.1 at this port, with TLS only.
    tcp_port: Option<u16>,
    /// Server settings of this run only (`-c name=value ...`), not written
    /// to its files, so a standby copied from it does not inherit them.
    settings: String,
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Cluster {
    /// The cluster the tests running now share, started if none is.
    pub fn shared() -> Result<Arc<Cluster>> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = shared.upgrade() {
            return Ok(c);
        }
        let c = Arc::new(Cluster::start()?);
        *shared = Arc::downgrade(&c);
        Ok(c)
    }

    /// A server of the caller's own (to stop and start).
    pub fn start() -> Result<Cluster> {
        Self::start_with(false)
    }

    /// A server of the caller's own that also listens on 127.0.0.1 (a free
    /// port) with TLS, its certificate made for the run (`localhost`, in
    /// `ca_file`); clients there must use TLS (`hostssl` only).
    pub fn start_tls() -> Result<Cluster> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Cluster> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("twofold-pg-").tempdir()?;
        let (uid, gid) = uid_gid_of(SUPERUSER)?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let pwfile = dir.path().join("initdb-password");
        std::fs::File::create(&pwfile)?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))?;
        std::fs::write(&pwfile, format!("{PASSWORD}\n"))?;
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        let secrets = tempfile::Builder::new()
            .prefix("twofold-pg-secrets-")
            .tempdir()?;
        let mut c = Cluster {
            dir,
            secrets,
            bin,
            tcp_port: None,
            settings: String::new(),
        };
        c.as_postgres("initdb")
            .arg("-D")
            .arg(c.data())
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("initdb")
            .and_then(|o| check("initdb", &o))?;
        // The daemon's copy of the password: root's, 0600.
        std::fs::write(c.password_file(), format!("{PASSWORD}\n"))?;
        std::fs::set_permissions(c.password_file(), std::fs::Permissions::from_mode(0o600))?;
        if tls {
            c.tls_setup(uid, gid)?;
        }
        c.resume()?;
        Ok(c)
    }

    fn tls_setup(&mut self, uid: u32, gid: u32) -> Result<()> {
        let (crt, key) = (self.ca_file(), self.dir.path().join("server.key"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()?;
        check("openssl req", &out)?;
        std::os::unix::fs::chown(&key, Some(uid), Some(gid))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        std::fs::set_permissions(&crt, std::fs::Permissions::from_mode(0o644))?;
        // Network clients over TLS only.
        let hba = self.data().join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)?;
        let text: String = text
            .lines()
            .map(|l| match l.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&hba, text)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        self.tcp_port = Some(port);
        Ok(())
    }

    /// The server's certificate (`start_tls`), which also serves as the CA.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server's port: its Unix socket's name, and its TCP port if any.
    pub fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(5432)
    }

    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SUPERUSER, "--"])
            .arg(self.bin.join(program));
        cmd
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the server's socket (`host=` in a connection string).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The superuser's password, in a root-only file (`store.password_file`).
    pub fn password_file(&self) -> PathBuf {
        self.secrets.path().join("password")
    }

    /// Start the server (again), waiting until it takes connections.
    pub fn resume(&self) -> Result<()> {
        let mut options = match self.tcp_port {
            None => format!(
                "-k {} -c listen_addresses='' -p 5432",
                self.socket_dir().display()
            ),
            Some(port) => format!(
                "-k {} -p {port} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                self.socket_dir().display(),
                self.ca_file().display(),
                self.dir.path().join("server.key").display()
            ),
        };
        options.push_str(&self.settings);
        self.as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .output()
            .context("pg_ctl start")
            .and_then(|o| check("pg_ctl start", &o))
    }

    /// Stop the server (`mode`: fast, or immediate for a crash).
    pub fn stop(&self, mode: &str) -> Result<()> {
        self.as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "30", "-m", mode, "stop"])
            .output()
            .context("pg_ctl stop")
            .and_then(|o| check("pg_ctl stop", &o))
    }

    /// A primary that waits for its standby (`start_standby`) at each
    /// commit: `synchronous_standby_names` names it, `synchronous_commit`
    /// is `on` (flushed on the standby before the commit returns).
    pub fn start_primary() -> Result<Cluster> {
        let mut c = Self::start_with(false)?;
        c.stop("fast")?;
        c.settings = " -c synchronous_standby_names=standby -c synchronous_commit=on".to_string();
        c.resume()?;
        Ok(c)
    }

    /// A streaming standby of this primary: `pg_basebackup -R` from it into
    /// a new directory, started with its own socket there, and waited for
    /// until the primary counts it as its synchronous standby.
    pub fn start_standby(&self) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("twofold-pg-").tempdir()?;
        let (uid, gid) = uid_gid_of(SUPERUSER)?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let secrets = tempfile::Builder::new()
            .prefix("twofold-pg-secrets-")
            .tempdir()?;
        std::fs::copy(self.password_file(), secrets.path().join("password"))?;
        let c = Cluster {
            dir,
            secrets,
            bin: self.bin.clone(),
            tcp_port: None,
            settings: String::new(),
        };
        let source = format!(
            "host={} port={} user={SUPERUSER} password={PASSWORD} application_name=standby",
            self.socket_dir().display(),
            self.port()
        );
        c.as_postgres("pg_basebackup")
            .arg("-D")
            .arg(c.data())
            .args(["-R", "-X", "stream", "--no-sync", "-d", &source])
            .output()
            .context("pg_basebackup")
            .and_then(|o| check("pg_basebackup", &o))?;
        c.resume()?;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let state = self.psql(
                "postgres",
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
            )?;
            if state.trim() == "sync" {
                return Ok(c);
            }
            if std::time::Instant::now() > until {
                bail!("the standby is not synchronous ({state:?}): {}", c.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kill every process of the server with SIGKILL, as a crash of its
    /// machine would: no shutdown, no last word to the standby.
    pub fn kill(&self) -> Result<()> {
        let pids = self.processes()?;
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions; the pids are
            // this test's server's own processes.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        Ok(())
    }

    /// Promote a standby to primary (`pg_ctl promote`), waiting until it is.
    pub fn promote(&self) -> Result<()> {
        self.as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "30", "promote"])
            .output()
            .context("pg_ctl promote")
            .and_then(|o| check("pg_ctl promote", &o))
    }

    /// The server's processes: the postmaster (from `postmaster.pid`) and
    /// its children.
    fn processes(&self) -> Result<Vec<i32>> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid"))?;
        let main: i32 = text.lines().next().unwrap_or_default().trim().parse()?;
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent is the second field after the command's closing parenthesis.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if parent == Some(main) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) every process of the server: a
    /// database that takes connections and statements and never answers.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        for pid in self.processes()? {
            // SAFETY: kill has no memory-safety preconditions; the pids are
            // this test's server's own processes.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    /// A client program (`psql`, `pg_dump`) connected to `db` as the superuser.
    pub fn client(&self, program: &str, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-U", SUPERUSER, "-d", db])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5");
        cmd
    }

    /// Run `sql` in `db`; the rows, one a line, fields split by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = self
            .client("psql", db)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .context("psql")?;
        check("psql", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A new, empty database of this cluster.
    pub fn create_database(&self) -> Result<String> {
        let n = NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("tf_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// The server's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

fn check(what: &str, out: &std::process::Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

/// One database and one fleet key: what the hosts of a test fleet share.
pub struct Fleet {
    pub cluster: Arc<Cluster>,
    pub db: String,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// A fleet on the shared cluster.
    pub fn new() -> Result<Fleet> {
        Self::on(Cluster::shared()?)
    }

    /// A fleet on `cluster`, its key made by `twofoldd --new-fleet-key`.
    pub fn on(cluster: Arc<Cluster>) -> Result<Fleet> {
        let db = cluster.create_database()?;
        let dir = tempfile::Builder::new()
            .prefix("twofold-fleet-")
            .tempdir()?;
        let f = Fleet { cluster, db, dir };
        f.new_key(&f.key_file())?;
        Ok(f)
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("fleet.key")
    }

    /// Make a fleet key at `path` with the daemon's own command.
    pub fn new_key(&self, path: &Path) -> Result<String> {
        let config = self.dir.path().join(format!(
            "key-{}.toml",
            NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(
            &config,
            format!("[store]\nfleet_key_file = \"{}\"\n", path.display()),
        )?;
        let out = Command::new(crate::artifacts().twofoldd())
            .arg("--config")
            .arg(&config)
            .arg("--new-fleet-key")
            .output()?;
        check("twofoldd --new-fleet-key", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `[store]` section of a host of this fleet, with `key_file` as its key.
    pub fn config_with_key(&self, key_file: &Path) -> String {
        format!(
            "[store]\nbackend = \"postgresql\"\n\
             connection = \"host={} port={} dbname={} user={SUPERUSER} target_session_attrs=read-write\"\n\
             password_file = \"{}\"\nfleet_key_file = \"{}\"\nconnect_timeout_secs = 3\nstatement_timeout_secs = 3\n",
            self.cluster.socket_dir().display(),
            self.cluster.port(),
            self.db,
            self.cluster.password_file().display(),
            key_file.display()
        )
    }

    /// The `[store]` of a host reaching a `start_tls` server over TCP at
    /// `host`, with TLS, verifying with `ca_file` (empty: the system's).
    pub fn tcp_store_config(
        &self,
        host: &str,
        ca_file: &Path,
    ) -> Result<twofoldd::config::StoreConfig> {
        let text = format!(
            "[store]\nbackend = \"postgresql\"\n\
             connection = \"host={host} port={} dbname={} user={SUPERUSER} sslmode=require\"\n\
             password_file = \"{}\"\nfleet_key_file = \"{}\"\nca_file = \"{}\"\n",
            self.cluster.port(),
            self.db,
            self.cluster.password_file().display(),
            self.key_file().display(),
            ca_file.display()
        );
        Ok(twofoldd::config::parse(&text, Path::new("fleet.toml"))?.store)
    }

    /// The `[store]` section of a host that names `standby` after the
    /// primary in `host=` (a multi-host connection string: with
    /// `target_session_attrs=read-write` the first server that takes writes).
    pub fn config_with_standby(&self, standby: &Cluster) -> String {
        let primary = format!("host={}", self.cluster.socket_dir().display());
        self.config().replacen(
            &primary,
            &format!("{primary},{}", standby.socket_dir().display()),
            1,
        )
    }

    /// The `[store]` section of a host of this fleet.
    pub fn config(&self) -> String {
        self.config_with_key(&self.key_file())
    }

    /// The `StoreConfig` of a host of this fleet (for tests of the store itself).
    pub fn store_config(&self) -> twofoldd::config::StoreConfig {
        twofoldd::config::parse(&self.config(), Path::new("fleet.toml"))
            .map(|c| c.store)
            .unwrap_or_default()
    }

    /// `twofoldd --config FILE ARGS`, FILE holding this fleet's `[store]`.
    pub fn twofoldd(&self, args: &[&str]) -> Result<std::process::Output> {
        let config = self.dir.path().join("twofoldd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\n{}",
                self.dir.path().join("state").display(),
                self.config()
            ),
        )?;
        Ok(Command::new(crate::artifacts().twofoldd())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()?)
    }

    pub fn psql(&self, sql: &str) -> Result<String> {
        self.cluster.psql(&self.db, sql)
    }

    /// `pg_dump` of the fleet's database, as text.
    pub fn dump(&self) -> Result<String> {
        let out = self.cluster.client("pg_dump", &self.db).output()?;
        check("pg_dump", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
