# Sourced by the device scripts: every step fits in BUDGET seconds from the script's start (the device
# call's timeout_s less a margin). `limit N` is N or the seconds left, whichever is less; `enough STEP` fails,
# says so and sets status=1 when under 30 s are left: a step skipped for time was not checked.
BUDGET=${BUDGET:-570}
status=0
limit() { local left=$((BUDGET - SECONDS)); (( left < $1 )) && echo "$left" || echo "$1"; }
enough() {
  (( BUDGET - SECONDS >= 30 )) && return 0
  echo "== $1: skipped, $((BUDGET - SECONDS)) s left of BUDGET=$BUDGET"; status=1; return 1
}
