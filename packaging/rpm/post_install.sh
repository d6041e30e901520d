# twofold (RPM) after install or upgrade: prepare the state directory
# (0700, root, marked; harmless to repeat). No PAM stack is changed: add
# pam_twofold.so by hand (see /usr/share/doc/twofold/examples/pam.d/).
if ! /usr/sbin/twofoldd --init; then
    echo "twofold: the state directory is not ready; fix the error above, then run: twofoldd --init" >&2
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    systemctl try-restart twofoldd.service >/dev/null 2>&1 || true
fi
