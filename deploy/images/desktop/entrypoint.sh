#!/bin/bash
# Starts a Kasm-like desktop in the deskhub/desktop image (run by tini as uid 1000): an X server,
# openbox, an xterm, two x11vnc servers on loopback (read-write on 5901, view-only on 5902) and
# noVNC behind websockify on HTTPS 6901 with Kasm's two users and basic auth: kasm_user:$VNC_PW
# reaches the first, kasm_viewer:$VNC_PW the second (kasm-websockify.py). If any part dies the
# container exits, so the control plane sees a dead desktop instead of a half-working one.
set -euo pipefail

VNC_PW=${VNC_PW:-}
if [ "${#VNC_PW}" -lt 6 ]; then
  # Kasm's vnc_startup.sh aborts the same way.
  echo "deskhub-desktop: VNC_PW must be set and at least 6 characters long" >&2
  exit 1
fi

export HOME=${HOME:-/home/kasm-user} DISPLAY=${DISPLAY:-:1}
resolution=${VNC_RESOLUTION:-1280x720}
state=$HOME/.deskhub
mkdir -p "$state"
cd "$HOME"

# A new self-signed certificate at every start, like Kasm's images.
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$(hostname)" \
  -keyout "$state/self.pem" -out "$state/self.pem" 2>/dev/null
chmod 600 "$state/self.pem"

Xvfb "$DISPLAY" -screen 0 "${resolution}x24" -nolisten tcp >"$state/xvfb.log" 2>&1 &
xvfb=$!
for _ in $(seq 1 100); do
  [ -S "/tmp/.X11-unix/X${DISPLAY#:}" ] && break
  sleep 0.1
done
[ -S "/tmp/.X11-unix/X${DISPLAY#:}" ] || { cat "$state/xvfb.log" >&2; echo "deskhub-desktop: Xvfb did not start" >&2; exit 1; }

# An X client started in the very first moments can fail to open the display on a loaded
# machine; try again a few times, but only after a failure (a user closing the xterm ends it).
x_client() {
  local log=$1
  shift
  for _ in $(seq 1 20); do
    "$@" >>"$log" 2>&1 && return 0
    sleep 0.5
  done
}
x_client "$state/openbox.log" openbox &
x_client "$state/xterm.log" xterm -geometry 100x30+40+40 -bg '#1d2a3a' -fg '#f4f7fa' -title "deskhub desktop" &
if [ -n "${LAUNCH_URL:-}" ] && command -v firefox-esr >/dev/null; then
  firefox-esr "$LAUNCH_URL" >"$state/firefox.log" 2>&1 &
fi

# The web folder, built at every start like Kasm's: noVNC's files, and the owner's ~/Downloads
# linked in as Downloads/Downloads (kasm_default_profile.sh does the same), so any signed-in
# user, kasm_viewer included, can fetch the owner's downloads at /Downloads/Downloads/<file>.
www=$state/www
mkdir -p "$HOME/Downloads"
rm -rf "$www"
mkdir -p "$www/Downloads"
ln -s /usr/share/novnc/* "$www/"
ln -s "$HOME/Downloads" "$www/Downloads/Downloads"

# The x11vnc servers listen on loopback only and have no VNC password: the only way in from
# outside is websockify, which checks basic auth on every request like KasmVNC. A VNC password
# would make noVNC ask the user for it, and the user never sees the desktop's password.
# kasm_viewer's server drops keys, pointer and clipboard (-viewonly), and never sets the
# desktop's selections.
x11vnc -display "$DISPLAY" -rfbport 5901 -localhost -forever -shared -nopw -quiet \
  -noxdamage -desktop "deskhub desktop" >"$state/x11vnc.log" 2>&1 &
vnc=$!
x11vnc -display "$DISPLAY" -rfbport 5902 -localhost -forever -shared -nopw -quiet \
  -noxdamage -viewonly -nosetclipboard -nosetprimary -desktop "deskhub desktop (view only)" \
  >"$state/x11vnc-viewer.log" 2>&1 &
viewer_vnc=$!

# The web server starts only once both VNC servers listen: deskhub's readiness probe asks the web
# server, so a desktop is "running" only when a browser that connects gets a screen (as a Kasm
# image's web server is KasmVNC itself). Without this wait noVNC's first connections were refused
# for about two seconds after readiness.
for port in 5901 5902; do
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$vnc" "$viewer_vnc" 2>/dev/null || break
    sleep 0.05
  done
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
    cat "$state/x11vnc.log" "$state/x11vnc-viewer.log" >&2
    echo "deskhub-desktop: x11vnc does not listen on $port" >&2
    exit 1
  }
done

# VNC_PW stays in the environment (kasm-websockify.py reads it there, not from its arguments).
export VNC_PW
kasm-websockify --web "$www" --cert "$state/self.pem" --owner-port 5901 --viewer-port 5902 6901 &
web=$!

# The X server, either VNC server or the web server exiting ends the desktop (tini -g then
# signals the rest); closing the xterm does not.
set +e
wait -n "$xvfb" "$vnc" "$viewer_vnc" "$web"
status=$?
echo "deskhub-desktop: the X, a VNC or the web server exited with status $status; stopping" >&2
exit "$status"
