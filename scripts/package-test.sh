#!/usr/bin/env bash
# Tests the packages (make package-test), as root:
#   1. the systemd unit's exposure (systemd-analyze security --offline) is 1.5
#      or lower;
#   2. the RPM's files, modes, config files, dependencies and scriptlets, and
#      rpmlint (packaging/rpm/rpmlint.toml): no finding but the missing
#      signature;
#   3. the .deb's files, modes, conffiles and dependencies, lintian: no error
#      and no warning; then the .deb in a scratch Debian 12 root (mmdebstrap,
#      minbase), never the host: the installed files and modes,
#      pam-auth-update --enable / --disable, a login through pamtester that
#      asks for a code from twofoldd started by D-Bus activation on the
#      root's own bus, an upgrade to a newer version that ends the old
#      daemon (the next login, at once, reaches the new one), removal refused
#      while a PAM stack names the module, and nothing left after apt-get
#      purge.
# The scratch root runs in its own mount and PID namespaces: its mounts
# (/proc, /dev) never reach the host's and are undone when it ends, and every
# process started in it (its dbus-daemon, twofoldd) ends with it.
#
# Usage: scripts/package-test.sh [--no-build]   (--no-build: test the
# packages already in target/packages). The bootstrap is kept in
# /var/cache/twofold-package-test (remove it to fetch a fresh one).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "package-test: FAILED: $*" >&2
  exit 1
}
ok() { echo "package-test: ok: $*"; }

# The part run inside the namespaces:
#   scripts/package-test.sh --inside ROOT DEB NEWER_DEB
if [ "${1:-}" = "--inside" ]; then
  root="$2"
  deb="$3"
  newer="$4"
  cleanup_mounts() {
    # Every other process of this PID namespace was started here (the root's
    # dbus-daemon, twofoldd): end them, so that nothing holds the mounts.
    local p
    for p in "$root"/proc/[0-9]*; do
      [ "${p##*/}" = 1 ] || kill "${p##*/}" 2>/dev/null || true
    done
    sleep 0.2
    for m in "$root/dev" "$root/proc"; do
      if mountpoint -q "$m"; then umount "$m" || umount -l "$m"; fi
    done
  }
  trap cleanup_mounts EXIT
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  in_root() { chroot "$root" "$@"; }
  export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
  unset DBUS_SYSTEM_BUS_ADDRESS

  # Every file of the root but the volatile ones, with a checksum of those
  # under /etc, to compare before the install and after the purge.
  snapshot() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp -o -path ./run \
        -o -path ./var/log -o -path ./var/cache -o -path ./var/lib/dpkg -o -path ./var/lib/apt \) -prune \
        -o -print | LC_ALL=C sort)
    (cd "$root" && find ./etc -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum)
  }

  # A user with a password, made before the first snapshot.
  in_root useradd -m -s /bin/bash tf-pkg
  echo 'tf-pkg:pkg-test-password' | in_root chpasswd
  common_auth_before="$(cat "$root/etc/pam.d/common-auth")"
  snapshot >"$root/../before.txt"

  cp "$deb" "$root/tmp/"
  in_root dpkg -i "/tmp/$(basename "$deb")" >"$root/../dpkg-install.log" 2>&1 ||
    { cat "$root/../dpkg-install.log"; fail "dpkg -i in the scratch root"; }
  echo "--- dpkg -i:"
  cat "$root/../dpkg-install.log"
  echo "---"
  ok "installed in a Debian 12 root: $(in_root dpkg-query -W -f='${Package} ${Version}' twofold)"

  # Files and modes.
  check_mode() { # MODE OWNER PATH
    local got
    got="$(stat -c '%a %U' "$root$3" 2>/dev/null)" || fail "$3 is missing"
    [ "$got" = "$1 $2" ] || fail "$3 is $got, not $1 $2"
  }
  check_mode 755 root /usr/bin/twofold
  check_mode 755 root /usr/sbin/twofoldd
  check_mode 644 root /usr/lib/x86_64-linux-gnu/security/pam_twofold.so
  check_mode 644 root /usr/share/dbus-1/system.d/org.twofold.Twofold1.conf
  check_mode 644 root /usr/share/dbus-1/system-services/org.twofold.Twofold1.service
  check_mode 644 root /lib/systemd/system/twofoldd.service
  check_mode 644 root /lib/systemd/system/twofoldd.socket
  check_mode 644 root /usr/share/pam-configs/twofold
  check_mode 644 root /etc/twofold/twofold.toml
  check_mode 644 root /etc/twofold/policy.toml
  check_mode 700 root /var/lib/twofold
  check_mode 700 root /var/lib/twofold/users
  check_mode 600 root /var/lib/twofold/users/.twofold-state
  check_mode 644 root /usr/share/doc/twofold/examples/sshd_config.d/twofold.conf
  check_mode 644 root /usr/share/doc/twofold/examples/twofoldd-email.conf
  check_mode 644 root /usr/share/doc/twofold/examples/twofoldd-postgresql.conf
  check_mode 644 root /usr/share/doc/twofold/examples/pam.d/sshd
  check_mode 644 root /usr/share/bash-completion/completions/twofold
  check_mode 644 root /usr/share/zsh/vendor-completions/_twofold
  for page in man1/twofold.1 man5/twofold.toml.5 man5/twofold-policy.5 man8/twofoldd.8 man8/pam_twofold.8; do
    check_mode 644 root "/usr/share/man/$page.gz"
  done
  grep -q '^mode = "recommend"' "$root/etc/twofold/policy.toml" || fail "the shipped policy is not recommend"
  conffiles="$(in_root dpkg-query -W -f='${Conffiles}' twofold)"
  for f in /etc/twofold/twofold.toml /etc/twofold/policy.toml; do
    grep -q "$f" <<<"$conffiles" || fail "$f is not a conffile"
  done
  ok "files and modes, /var/lib/twofold 0700 and marked, conffiles"

  [ "$(cat "$root/etc/pam.d/common-auth")" = "$common_auth_before" ] ||
    fail "installing changed common-auth (the profile must be off by default)"
  ok "installing left common-auth as it was (Default: no)"

  in_root pam-auth-update --enable twofold
  enabled="$(cat "$root/etc/pam.d/common-auth")"
  echo "--- common-auth after pam-auth-update --enable twofold (diff):"
  diff <(echo "$common_auth_before") <(echo "$enabled") || true
  echo "---"
  # The line comes after the password's `requisite pam_deny.so` and
  # `required pam_permit.so`, as in packaging/pam.d/sshd.
  grep -vE '^[[:space:]]*(#|$)' <<<"$enabled" | grep -A2 'pam_deny.so' | grep -A1 'pam_permit.so' |
    grep -qE '^auth[[:space:]]+required[[:space:]]+pam_twofold\.so[[:space:]]*$' ||
    fail "pam_twofold.so is not right after the password block of common-auth"
  ok "pam-auth-update --enable twofold adds the module after the password"

  # The bus of the scratch root: its own dbus-daemon on its own
  # /run/dbus/system_bus_socket, which starts twofoldd at the first call
  # through the activation file and the bus's launch helper.
  mkdir -p "$root/run/dbus"
  in_root dbus-daemon --system --fork --nopidfile ||
    fail "the scratch root's dbus-daemon did not start"
  for _ in $(seq 50); do [ -S "$root/run/dbus/system_bus_socket" ] && break; sleep 0.1; done

  # The processes of this PID namespace named $1 (procps is not in minbase).
  running() {
    local p
    for p in "$root"/proc/[0-9]*; do
      [ "$(cat "$p/comm" 2>/dev/null)" = "$1" ] && echo "${p##*/}"
    done
    return 0
  }
  [ -z "$(running twofoldd)" ] || fail "twofoldd runs before anyone called it"

  # Enroll through `twofold setup` on a pipe: the Key URI, then a code (of
  # the previous step, keeping the current one for the login).
  into=$(($(date +%s) % 30))
  [ "$into" -lt 20 ] || sleep $((31 - into))
  mkfifo "$root/../setup.in"
  chroot "$root" runuser -u tf-pkg -- twofold setup <"$root/../setup.in" >"$root/../setup.out" 2>&1 &
  setup_pid=$!
  exec 7>"$root/../setup.in"
  uri=""
  for _ in $(seq 100); do
    uri="$(grep -m1 '^otpauth://' "$root/../setup.out" || true)"
    [ -n "$uri" ] && break
    sleep 0.1
  done
  secret="$(sed -n 's/.*[?&]secret=\([A-Z2-7]*\).*/\1/p' <<<"$uri")"
  [ -n "$secret" ] || fail "no Key URI from twofold setup: $(cat "$root/../setup.out")"
  oathtool --totp --base32 "--now=@$(($(date +%s) - 30))" "$secret" >&7
  exec 7>&-
  wait "$setup_pid" || fail "twofold setup: $(cat "$root/../setup.out")"
  [ -n "$(running twofoldd)" ] || fail "no twofoldd after twofold setup"
  ok "twofold setup as a user; the bus started twofoldd (pid $(running twofoldd)) through the activation file"

  login() { # CODE -> pamtester's output
    printf 'pkg-test-password\n%s\n' "$1" | chroot "$root" pamtester login tf-pkg authenticate 2>&1 || true
  }
  code="$(oathtool --totp --base32 "$secret")"
  out="$(login "$code")"
  echo "--- pamtester login tf-pkg authenticate (password, then the code):"
  echo "$out"
  echo "---"
  grep -q 'Verification code:' <<<"$out" || fail "the login did not ask for a code"
  grep -q 'successfully authenticated' <<<"$out" || fail "the right code was refused"
  wrong=$(printf '%06d' $(((10#$code + 1) % 1000000)))
  out="$(login "$wrong")"
  grep -q 'Verification code:' <<<"$out" || fail "the second login did not ask for a code"
  if grep -q 'successfully authenticated' <<<"$out"; then fail "a wrong code let the user in: $out"; fi
  ok "a login through common-auth asks for a code; the right one passes, a wrong one does not"

  # An upgrade while the daemon runs: the old binary must not stay behind
  # the new module. Without systemd, the postinst ends it and the bus starts
  # the new one at the next call, which is the login right after.
  old_pid="$(running twofoldd)"
  [ -n "$old_pid" ] || fail "no twofoldd before the upgrade"
  cp "$newer" "$root/tmp/"
  in_root dpkg -i "/tmp/$(basename "$newer")" >"$root/../dpkg-upgrade.log" 2>&1 ||
    { cat "$root/../dpkg-upgrade.log"; fail "dpkg -i of a newer package over the installed one"; }
  upgraded="$(in_root dpkg-query -W -f='${Version}' twofold)"
  [ "$upgraded" = "$(dpkg-deb -f "$newer" Version)" ] || fail "after the upgrade dpkg has twofold $upgraded"
  if [ -d "$root/proc/$old_pid" ] && ! grep -q '^State:.*zombie' "$root/proc/$old_pid/status" 2>/dev/null; then
    fail "the old daemon (pid $old_pid, $(readlink "$root/proc/$old_pid/exe")) still runs after the upgrade"
  fi
  backup="$(grep -m1 -E '^[[:alnum:]]{4,}-[[:alnum:]]{4,}$' "$root/../setup.out" || true)"
  [ -n "$backup" ] || fail "no backup code in the output of twofold setup: $(cat "$root/../setup.out")"
  out="$(login "$backup")"
  grep -q 'successfully authenticated' <<<"$out" || fail "the login right after the upgrade failed: $out"
  new_pid="$(running twofoldd)"
  [ -n "$new_pid" ] && [ "$new_pid" != "$old_pid" ] || fail "no new twofoldd after the upgrade (pid: $new_pid)"
  exe="$(readlink "$root/proc/$new_pid/exe")"
  [ "$exe" = "$root/usr/sbin/twofoldd" ] || fail "the daemon after the upgrade runs $exe, not the new binary"
  ok "upgrade to $upgraded: the old twofoldd (pid $old_pid) ended, the login right after passed through a new one (pid $new_pid)"

  in_root pam-auth-update --disable twofold
  [ "$(cat "$root/etc/pam.d/common-auth")" = "$common_auth_before" ] ||
    fail "pam-auth-update --disable twofold did not restore common-auth"
  ok "pam-auth-update --disable twofold restores common-auth"
  in_root pam-auth-update --enable twofold

  # Removal while another stack names the module would lock that stack's
  # users out: the prerm refuses it.
  printf 'auth required pam_twofold.so\n' >"$root/etc/pam.d/tf-pkg-test"
  if in_root apt-get remove -y twofold >"$root/../remove.log" 2>&1; then
    fail "apt-get remove went through while /etc/pam.d/tf-pkg-test names the module"
  fi
  grep -q 'tf-pkg-test' "$root/../remove.log" || fail "the refusal does not name the stack: $(cat "$root/../remove.log")"
  [ -f "$root/usr/lib/x86_64-linux-gnu/security/pam_twofold.so" ] || fail "the module is gone after a refused removal"
  ok "removal refused while /etc/pam.d/tf-pkg-test names the module"
  rm "$root/etc/pam.d/tf-pkg-test"
  in_root dpkg --configure -a >/dev/null 2>&1 || true

  in_root apt-get purge -y twofold >"$root/../purge.log" 2>&1 ||
    { cat "$root/../purge.log"; fail "apt-get purge"; }
  [ "$(cat "$root/etc/pam.d/common-auth")" = "$common_auth_before" ] ||
    fail "common-auth still changed after the purge"
  [ -z "$(running twofoldd)" ] || fail "twofoldd still runs after the purge"
  snapshot >"$root/../after.txt"
  # pam-auth-update's own record of the profiles it has seen is not ours.
  if ! leftover="$(diff "$root/../before.txt" "$root/../after.txt" | grep -v '^[0-9]' | grep -v '\./var/lib/pam/')"; then
    leftover=""
  fi
  [ -z "$leftover" ] || fail "the purge left this behind (< before, > after):
$leftover"
  ok "apt-get purge (with the profile enabled): common-auth restored, daemon stopped, no file left"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || fail "run as root (chroot, mounts)"
scripts/install-deps.sh package-test
if [ "${1:-}" != "--no-build" ]; then
  scripts/package.sh
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
deb="target/packages/twofold_${version}_amd64.deb"
rpm="$(ls target/packages/twofold-"$version"-*.x86_64.rpm 2>/dev/null | head -1)"
[ -f "$deb" ] || fail "no $deb (make package)"
[ -n "$rpm" ] || fail "no RPM in target/packages (make package)"
start=$(date +%s)

# 1. The unit.
analysis="$(systemd-analyze security --offline=true packaging/systemd/twofoldd.service 2>&1)" ||
  { echo "$analysis"; fail "systemd-analyze security"; }
exposure="$(sed -n 's/.*Overall exposure level for twofoldd.service: \([0-9.]*\).*/\1/p' <<<"$analysis")"
[ -n "$exposure" ] || { echo "$analysis"; fail "no exposure figure"; }
awk -v e="$exposure" 'BEGIN { exit !(e <= 1.5) }' ||
  { echo "$analysis"; fail "the unit's exposure is $exposure, above 1.5"; }
ok "systemd-analyze security --offline=true: overall exposure $exposure (at most 1.5)"

# With the e-mail drop-in (network for an SMTP relay): the unit with the
# drop-in's [Service] lines appended, as systemd merges them.
email_unit="$(mktemp -d)/twofoldd.service"
{ sed '/^\[Install\]/,$d' packaging/systemd/twofoldd.service
  sed -n '/^\[Service\]/,$p' packaging/systemd/twofoldd-email.conf | tail -n +2
  sed -n '/^\[Install\]/,$p' packaging/systemd/twofoldd.service; } >"$email_unit"
email_exposure="$(systemd-analyze security --offline=true "$email_unit" 2>&1 |
  sed -n 's/.*Overall exposure level for twofoldd.service: \([0-9.]*\).*/\1/p')"
[ -n "$email_exposure" ] || fail "no exposure figure for the e-mail drop-in"
awk -v e="$email_exposure" 'BEGIN { exit !(e <= 1.6) }' ||
  fail "with the e-mail drop-in the exposure is $email_exposure, above the documented 1.6"
ok "with packaging/systemd/twofoldd-email.conf: overall exposure $email_exposure (documented 1.6)"
rm -r "$(dirname "$email_unit")"

# With the database drop-in (network for a PostgreSQL server elsewhere).
pg_unit="$(mktemp -d)/twofoldd.service"
{ sed '/^\[Install\]/,$d' packaging/systemd/twofoldd.service
  sed -n '/^\[Service\]/,$p' packaging/systemd/twofoldd-postgresql.conf | tail -n +2
  sed -n '/^\[Install\]/,$p' packaging/systemd/twofoldd.service; } >"$pg_unit"
pg_exposure="$(systemd-analyze security --offline=true "$pg_unit" 2>&1 |
  sed -n 's/.*Overall exposure level for twofoldd.service: \([0-9.]*\).*/\1/p')"
[ -n "$pg_exposure" ] || fail "no exposure figure for the database drop-in"
awk -v e="$pg_exposure" 'BEGIN { exit !(e <= 1.6) }' ||
  fail "with the database drop-in the exposure is $pg_exposure, above the documented 1.6"
ok "with packaging/systemd/twofoldd-postgresql.conf: overall exposure $pg_exposure (documented 1.6)"
rm -r "$(dirname "$pg_unit")"

# 2. The RPM.
rpm_files="$(rpm -qp --queryformat '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]' "$rpm" | LC_ALL=C sort -k3)"
expected_rpm="$(LC_ALL=C sort -k3 <<'EOF'
drwxr-xr-x root /etc/twofold
-rw-r--r-- root /etc/twofold/policy.toml
-rw-r--r-- root /etc/twofold/twofold.toml
-rwxr-xr-x root /usr/bin/twofold
-rwxr-xr-x root /usr/lib64/security/pam_twofold.so
-rw-r--r-- root /usr/lib/systemd/system/twofoldd.service
-rw-r--r-- root /usr/lib/systemd/system/twofoldd.socket
-rwxr-xr-x root /usr/sbin/twofoldd
-rw-r--r-- root /usr/share/bash-completion/completions/twofold
-rw-r--r-- root /usr/share/dbus-1/system-services/org.twofold.Twofold1.service
-rw-r--r-- root /usr/share/dbus-1/system.d/org.twofold.Twofold1.conf
drwxr-xr-x root /usr/share/doc/twofold
-rw-r--r-- root /usr/share/doc/twofold/README.md
-rw-r--r-- root /usr/share/doc/twofold/changelog
drwxr-xr-x root /usr/share/doc/twofold/examples
drwxr-xr-x root /usr/share/doc/twofold/examples/pam.d
-rw-r--r-- root /usr/share/doc/twofold/examples/pam.d/login
-rw-r--r-- root /usr/share/doc/twofold/examples/pam.d/sshd
-rw-r--r-- root /usr/share/doc/twofold/examples/pam.d/sshd-publickey
-rw-r--r-- root /usr/share/doc/twofold/examples/pam.d/su
-rw-r--r-- root /usr/share/doc/twofold/examples/pam.d/sudo
drwxr-xr-x root /usr/share/doc/twofold/examples/sshd_config.d
-rw-r--r-- root /usr/share/doc/twofold/examples/sshd_config.d/twofold.conf
-rw-r--r-- root /usr/share/doc/twofold/examples/twofoldd-email.conf
-rw-r--r-- root /usr/share/doc/twofold/examples/twofoldd-postgresql.conf
-rw-r--r-- root /usr/share/licenses/twofold/copyright
-rw-r--r-- root /usr/share/man/man1/twofold.1.gz
-rw-r--r-- root /usr/share/man/man5/twofold-policy.5.gz
-rw-r--r-- root /usr/share/man/man5/twofold.toml.5.gz
-rw-r--r-- root /usr/share/man/man8/pam_twofold.8.gz
-rw-r--r-- root /usr/share/man/man8/twofoldd.8.gz
-rw-r--r-- root /usr/share/zsh/site-functions/_twofold
EOF
)"
diff <(echo "$expected_rpm") <(echo "$rpm_files") || fail "the RPM's files differ from the list (< expected, > $rpm)"
[ "$(rpm -qp --configfiles "$rpm" | LC_ALL=C sort | tr '\n' ' ')" = "/etc/twofold/policy.toml /etc/twofold/twofold.toml " ] ||
  fail "the RPM's config files: $(rpm -qp --configfiles "$rpm")"
requires="$(rpm -qp --requires "$rpm")"
for dep in pam dbus 'libpam.so.0()(64bit)'; do
  grep -qxF "$dep" <<<"$(sed 's/ .*//' <<<"$requires")" || fail "the RPM does not require $dep: $requires"
done
scripts="$(rpm -qp --scripts "$rpm")"
grep -q 'twofoldd --init' <<<"$scripts" || fail "the RPM's post-install does not initialize the state"
grep -q 'pam_twofold' <<<"$scripts" || fail "the RPM's pre-uninstall does not check the PAM stacks"
ok "RPM $(basename "$rpm"): files and modes, config files, requires (pam, dbus, libpam), scriptlets"

# The only rpmlint finding allowed is the missing signature: signing is the
# distributor's step, with the key its users trust (rpmsign --addsign).
rpmlint_out="$(rpmlint -c packaging/rpm/rpmlint.toml "$rpm" 2>&1)" || true
grep -q 'packages and 0 specfiles checked' <<<"$rpmlint_out" || { echo "$rpmlint_out"; fail "rpmlint did not run"; }
findings="$(grep -E '^[^ ]+: [EW]: ' <<<"$rpmlint_out" | grep -vE ': E: no-signature$' || true)"
[ -z "$findings" ] || { echo "$rpmlint_out"; fail "rpmlint on $(basename "$rpm"):
$findings"; }
ok "rpmlint $(rpmlint --version 2>/dev/null): no error or warning but no-signature"

# 3. The .deb, first as a file.
fields="$(dpkg-deb -f "$deb" Package Version Architecture Depends)"
grep -qx "Version: $version" <<<"$fields" || fail "$fields"
depends="$(sed -n 's/^Depends: //p' <<<"$fields")"
for dep in libpam0g dbus libpam-runtime libc6; do
  grep -qE "(^|, )$dep( |,|$)" <<<"$depends" || fail "the .deb does not depend on $dep: $depends"
done
control="$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)"
for script in postinst prerm postrm conffiles; do
  grep -qx "./$script" <<<"$control" || fail "the .deb has no $script"
done
grep -q 'usr/share/doc/twofold/changelog' <<<"$(dpkg-deb --fsys-tarfile "$deb" | tar -t)" ||
  fail "the .deb has no changelog"
ok ".deb $(basename "$deb"): Depends: $depends; conffiles; changelog"

# Debian's linter, as a packager or a sysadmin runs it before installing.
# A tag that is wrong for this package would go in an override file
# (packaging/debian/lintian-overrides, a reason on each line); there is none.
lintian_out="$(lintian --fail-on error,warning "$deb" 2>&1)" ||
  { echo "$lintian_out"; fail "lintian reports errors or warnings on $(basename "$deb")"; }
ok "lintian $(lintian --print-version): no error, no warning"

# What is loaded into sshd and every other login process: stripped, and of
# the size docs/testing.md gives (a profile override once left the symbols in).
unpacked="$(mktemp -d)"
dpkg-deb -x "$deb" "$unpacked"
for binary in usr/lib/x86_64-linux-gnu/security/pam_twofold.so usr/sbin/twofoldd usr/bin/twofold; do
  if readelf -S "$unpacked/$binary" | grep -q '\.symtab'; then
    fail "$binary in the .deb is not stripped"
  fi
done
module_bytes="$(stat -c %s "$unpacked/usr/lib/x86_64-linux-gnu/security/pam_twofold.so")"
rm -rf "$unpacked"
[ "$module_bytes" -le $((1536 * 1024)) ] || fail "pam_twofold.so is $module_bytes bytes (at most 1.5 MiB expected)"
ok ".deb: binaries stripped; pam_twofold.so $module_bytes bytes"

# Then installed into a scratch Debian 12 root.
cache=/var/cache/twofold-package-test
include=dbus,pamtester,libssl3
tarball="$cache/bookworm-minbase-$(echo "$include" | md5sum | cut -c1-8).tar"
mkdir -p "$cache"
if [ ! -f "$tarball" ]; then
  echo "Bootstrapping Debian 12 (minbase, with $include) into $tarball (once)"
  mmdebstrap --quiet --format=tar --variant=minbase --include="$include" bookworm "$tarball.part" http://deb.debian.org/debian
  mv "$tarball.part" "$tarball"
fi
work="$(mktemp -d /var/tmp/twofold-package-test.XXXXXX)"
cleanup() {
  # The root's mounts live in the namespace that ended; refuse to delete
  # anything should one be visible here all the same.
  if grep -qF " $work/" /proc/self/mounts; then
    echo "package-test: $work still has mounts; left in place" >&2
    return
  fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
# The newer package of the upgrade test: the same files under a higher
# version. dpkg replaces every file all the same, and the test checks which
# process runs after the upgrade, not what it does differently.
newer_version="${version}+upgrade-test"
dpkg-deb -R "$deb" "$work/newer"
sed -i "s/^Version: .*/Version: $newer_version/" "$work/newer/DEBIAN/control"
dpkg-deb --root-owner-group -Zgzip -z1 -b "$work/newer" "$work/twofold_${newer_version}_amd64.deb" >/dev/null
rm -rf "$work/newer"
mkdir "$work/root"
tar -C "$work/root" -xpf "$tarball"
unshare --mount --pid --fork --propagation private -- "$0" --inside "$work/root" "$(realpath "$deb")" \
  "$work/twofold_${newer_version}_amd64.deb"
echo "package-test: passed in $(($(date +%s) - start)) s (after the build)"
