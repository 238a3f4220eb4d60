#!/bin/sh
# Adds Immich ML Desktop to this user's application menu, pointing at the folder this script is in
# (the unpacked .tar.gz), and removes it again with --uninstall. Nothing outside ~/.local is touched.
set -eu
APP=immich-ml-desktop
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
ENTRY="$DATA/applications/$APP.desktop"
ICON="$DATA/icons/hicolor/256x256/apps/$APP.png"

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$ENTRY" "$ICON"
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$DATA/applications" || true
    echo "Removed $ENTRY and $ICON."
    exit 0
fi
if [ ! -x "$HERE/$APP" ]; then
    echo "error: $HERE/$APP is missing: run this script from the unpacked folder." >&2
    exit 1
fi
mkdir -p "$(dirname "$ENTRY")" "$(dirname "$ICON")"
cp "$HERE/$APP.png" "$ICON"
# The packaged entry with the binary's absolute path (the unpacked folder is not on PATH).
sed -e "s|^Exec=.*|Exec=\"$HERE/$APP\"|" -e "s|^TryExec=.*||" "$HERE/$APP.desktop" > "$ENTRY.tmp"
mv "$ENTRY.tmp" "$ENTRY"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$DATA/applications" || true
echo "Added $ENTRY (runs $HERE/$APP). Move the folder? Run this script again. Remove: $0 --uninstall"
