#!/bin/sh
# Drives the clipl REPL in a real terminal through tmux: tab completion, multi-line input, errors,
# Ctrl-C at the prompt and during a statement, `?name` help, `;`, and history across sessions.
#   tests/repl_tmux.sh BUILD_DIR        (exit 0 = pass; skips with exit 0 when tmux is absent)
# Uses a private tmux server (-L) so it never touches anyone's sessions.
set -u
build=$(cd "${1:?usage: tests/repl_tmux.sh BUILD_DIR}" && pwd)
bin="$build/clipl"
if ! command -v tmux >/dev/null 2>&1; then
    echo "SKIP: tmux is not installed (scripts/setup installs it)"
    exit 0
fi
[ -x "$bin" ] || { echo "FAIL: no launcher at $bin"; exit 1; }

tmp=$(mktemp -d)
hist="$tmp/history"
fails=0
runs=0
sock=
T() { tmux -L "$sock" "$@"; }
cleanup() { [ -n "$sock" ] && T kill-server >/dev/null 2>&1; sleep 0.2; rm -rf "$tmp"; }
trap cleanup EXIT

# start: a new REPL in a new private server (a fresh socket each time: no race with the old one).
# The pane's shell (tmux's default-shell: dash under CI, bash in a login) is in the REPL's process
# group, so Ctrl-C reaches it too; dash dies of it and takes the pane with it. `trap : INT` keeps the
# wrapper alive and still gives the REPL the default SIGINT disposition, as a terminal would.
start() {
    [ -n "$sock" ] && T kill-server >/dev/null 2>&1
    runs=$((runs + 1))
    sock="clipl-test-$$-$runs"
    T -f /dev/null new-session -d -s t -x 150 -y 50 \
        "trap : INT; env CLIPL_HISTORY='$hist' CLIPL_LIB='$build/libclipl.so' '$bin'; echo clipl-exit=\$?; sleep 60"
    wait_for '^> ?$' 10 || { echo "FAIL: the REPL did not start"; screen; exit 1; }
}
screen() { T capture-pane -p -t t -S -200 | sed '/^$/d'; }
# wait_for PATTERN [SECONDS]: polls the screen until an extended regex matches a line
wait_for() {
    n=$(( ${2:-5} * 10 ))
    while [ "$n" -gt 0 ]; do
        if screen | grep -Eq -- "$1"; then return 0; fi
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}
type_line() { T send-keys -t t -l -- "$1"; T send-keys -t t Enter; }
check() { # check NAME PATTERN [SECONDS]
    if wait_for "$2" "${3:-5}"; then
        echo "ok   $1"
    else
        echo "FAIL $1: no line matching /$2/ on the screen:"
        screen | tail -15 | sed 's/^/     | /'
        fails=$((fails + 1))
    fi
}
clear_screen() { T send-keys -t t C-u; T clear-history -t t; T send-keys -t t C-l; sleep 0.2; }

start
type_line 't = clip.tensor{{1, 2}, {3, 4}}'
# completion of a tensor method through the Tensor table
T send-keys -t t -l 't:siz'; T send-keys -t t Tab; sleep 0.3; type_line '()'
check "tab completes t:siz -> t:size()" '^\{2, 2\}$'
if "$bin" -e 'os.exit(clip.Tensor.softmax and 0 or 1)' 2>/dev/null; then
    # t:so has several methods (softmax, softplus, ...): Tab completes the common part t:soft and
    # a second Tab lists them; then t:softm completes to t:softmax
    T send-keys -t t -l 'r = t:so'; T send-keys -t t Tab Tab; sleep 0.5
    check "tab tab lists t:softmax among the t:so methods" 't:softmax'
    T send-keys -t t -l 'm'; T send-keys -t t Tab; sleep 0.3
    type_line '(-1); print(r:size()[2])'
    check "tab completes t:softm -> t:softmax" '^> r = t:softmax\(-1\); print'
fi
# completion of fields of the API table, and the list shown on a second Tab
T send-keys -t t -l 'clip.zer'; T send-keys -t t Tab; sleep 0.3; type_line '({3}):numel()'
check "tab completes clip.zer -> clip.zeros" '^3$'
T send-keys -t t -l 't:s'; T send-keys -t t Tab Tab; sleep 0.5
check "double tab lists candidates (t:size)" '(^| )t:size( |$)'
check "double tab lists candidates (t:squeeze)" '(^| )t:squeeze( |$)'
T send-keys -t t C-u; T send-keys -t t Enter

clear_screen
# multi-line input continued until the chunk is complete
type_line 'for i = 1, 3 do'
check "continuation prompt" '^>> ?$'
type_line 'io.write(i * 10, " ")'
type_line 'end print()'
check "multi-line chunk runs" '^10 20 30 ?$'

# results printed, `;` hides them
type_line '6 * 7'
check "expression result printed" '^42$'
type_line 'hidden = 1000 + 1;'
type_line 'hidden'
check "semicolon hides the result" '^1001$'
if screen | grep -q '^1001$' && [ "$(screen | grep -c '^1001$')" -ne 1 ]; then
    echo "FAIL the ;-terminated expression printed its result"; fails=$((fails + 1))
fi

clear_screen
# an error prints a traceback and the REPL stays
type_line 'local function f() error("boom") end f()'
check "error message" '^stdin:1: boom$'
check "error traceback" "stdin:1: in function 'f'"
type_line 'print("after error")'
check "REPL survives an error" '^after error$'

clear_screen
# Ctrl-C at the prompt drops the line
T send-keys -t t -l 'this line is dropped'
wait_for '^> this line is dropped$' 5   # echoed: the line editor has read it
T send-keys -t t C-c; sleep 0.3
type_line 'print("after ctrl-c at prompt")'
check "Ctrl-C at the prompt drops the line" '^after ctrl-c at prompt$'
# Ctrl-C while a statement runs (interpreted loop: pairs() is not JIT-compiled) interrupts it
type_line 'n = 0 print("spinning") while true do for _ in pairs({1}) do n = n + 1 end end'
wait_for '^spinning$' 10
sleep 0.3
T send-keys -t t C-c
check "Ctrl-C interrupts the running statement" 'interrupted!' 5
type_line 'print("still alive", n > 0)'
check "REPL survives Ctrl-C" '^still alive	true$|^still alive +true$'

clear_screen
# help of an API function
T send-keys -t t -l '?clip.tens'; T send-keys -t t Tab; sleep 0.3; T send-keys -t t Enter
check "?name shows help (name completed after ?)" '^clip\.tensor\(data, dtype\)$'

# Ctrl-D quits; history is kept across sessions
T send-keys -t t C-d
check "Ctrl-D quits with status 0" '^clipl-exit=0$'
if grep -q 'after.*error' "$hist" 2>/dev/null; then
    echo "ok   history file written"
else
    echo "FAIL history file $hist lacks the entries"; fails=$((fails + 1))
fi
start
T send-keys -t t Up; sleep 0.3
check "Up recalls the previous session's history" '^> \?clip\.tensor$'
T send-keys -t t C-u C-d
wait_for '^clipl-exit=' 5

if [ "$fails" -ne 0 ]; then
    echo "$fails REPL check(s) failed"
    exit 1
fi
echo "all REPL checks passed"
