#!/bin/sh
# Entry point of the Obscura container image (installed as /usr/local/bin/obscura-container-start).
#
# Before `obscura serve` starts, check that the RAM directory (uploads cache, TMPDIR) really is a
# RAM-backed filesystem. Inside a container a forgotten `--tmpfs` would leave that path on the
# image's overlay filesystem, that is on the host's disk; refuse to start instead. The server makes
# its own checks too (mode 0700, wiped at start and exit); this one only knows about containers.
# Every other subcommand (user, invite, token, audit, demo-model, generate) passes straight through.
set -eu

if [ "${1:-}" = "serve" ]; then
  ram_dir="${OBSCURA_RAM_DIR:-/run/obscura}"
  fs_type="$(stat -f -c %T "$ram_dir" 2>/dev/null || echo missing)"
  case "$fs_type" in
    tmpfs | ramfs) ;;
    *)
      allowed="$(printf '%s' "${OBSCURA_ALLOW_DISK_TEMP:-}" | tr '[:upper:]' '[:lower:]')"
      case " $* " in *" --allow-disk-temp "*) allowed=yes ;; esac
      case "$allowed" in
        1 | true | yes | on) ;;
        *)
          echo "obscura: $ram_dir is not a RAM-backed tmpfs ($fs_type), so uploads could reach the disk; mount one, e.g. --tmpfs $ram_dir:rw,noexec,nosuid,nodev,size=512m,mode=0700,uid=10001,gid=10001 (see docs/deploy.md)." >&2
          exit 78
          ;;
      esac
      ;;
  esac
fi

exec obscura "$@"
