# twofold (RPM) after erase or upgrade. The state in /var/lib/twofold (keys,
# hashed backup codes) is kept: RPM has no purge; remove it by hand.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
