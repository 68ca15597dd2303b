#!/usr/bin/env bash
# Prints the Debian archive this machine's apt uses for a suite (default bookworm), read from its own
# configuration: one-line sources (/etc/apt/sources.list, sources.list.d/*.list) and deb822 stanzas
# (sources.list.d/*.sources). A "mirror+file:" entry gives the first mirror its file lists.
# No mirror is named in this repository: the machine's apt setup decides.
#   scripts/apt_mirror.sh [SUITE]        (APT_ETC: the apt configuration dir, /etc/apt)
# Exit 1 (and nothing on stdout) when no enabled source carries the suite.
set -euo pipefail
SUITE=${1:-bookworm}
APT_ETC=${APT_ETC:-/etc/apt}

one_line() {
  # deb [options] URI SUITE COMPONENTS…
  awk -v S="$SUITE" '$1 == "deb" {
    i = 2
    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
    if ($(i + 1) == S) { print $i; exit }
  }' "$@"
}

deb822() {
  awk -v S="$SUITE" 'BEGIN { RS = "" } {
    uri = ""; found = 0; deb = 0; enabled = 1
    n = split($0, lines, "\n")
    for (j = 1; j <= n; j++) {
      line = lines[j]
      if (line ~ /^#/) continue
      split(line, w, /[ \t]+/)
      key = tolower(w[1])
      if (key == "uris:" && uri == "") uri = w[2]
      if (key == "enabled:" && tolower(w[2]) == "no") enabled = 0
      if (key == "types:") for (k = 2; k in w; k++) if (w[k] == "deb") deb = 1
      if (key == "suites:") for (k = 2; k in w; k++) if (w[k] == S) found = 1
    }
    if (found && deb && enabled && uri != "") { print uri; exit }
  }' "$@"
}

uri=""
lists=()
for f in "$APT_ETC/sources.list" "$APT_ETC"/sources.list.d/*.list; do [ -f "$f" ] && lists+=("$f"); done
[ ${#lists[@]} -gt 0 ] && uri=$(one_line "${lists[@]}")
if [ -z "$uri" ]; then
  stanzas=()
  for f in "$APT_ETC"/sources.list.d/*.sources; do [ -f "$f" ] && stanzas+=("$f"); done
  [ ${#stanzas[@]} -gt 0 ] && uri=$(deb822 "${stanzas[@]}")
fi
case "$uri" in
  mirror+file:*) uri=$(grep -m1 -vE '^[[:space:]]*(#|$)' "${uri#mirror+file:}" | awk '{ print $1 }') ;;
esac
[ -n "$uri" ] || exit 1
echo "${uri%/}"
