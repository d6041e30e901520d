# twofold (RPM) before erase ($1 = 0; not on upgrade): refuse while a PAM
# stack names pam_twofold.so, since a stack naming a missing module fails
# every login through it.
if [ "$1" -eq 0 ]; then
    left=$(grep -lE '^[[:space:]]*[^#[:space:]].*pam_twofold\.so' /etc/pam.conf /etc/pam.d/* 2>/dev/null || true)
    if [ -n "$left" ]; then
        echo "twofold: not removed: pam_twofold.so is still named in:" >&2
        echo "$left" | sed 's/^/  /' >&2
        echo "Take it out of those PAM stacks, then remove twofold again." >&2
        exit 1
    fi
    if [ -d /run/systemd/system ]; then
        systemctl stop twofoldd.service >/dev/null 2>&1 || true
    fi
fi
