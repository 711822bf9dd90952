#!/usr/bin/env bash
# Mutation testing of the simulator: applies each mutant (a `*.mutant` file
# here) to a scratch copy of the workspace, runs the simulation test for N
# seeds (all of them: QUORATE_SIM_KEEP_GOING) and reports whether the
# simulator caught it, the first failing seed, how many seeds failed and
# what broke first. Not run in CI (minutes per mutant).
#
#   raft-core/mutants/run.sh [NAME...]        all mutants, or the named ones
#   QUORATE_MUTANT_SEEDS=N                    seeds per mutant (default 1000)
#   QUORATE_MUTANT_SCRATCH=DIR                scratch workspace (default /tmp/quorate-mutants)
#   CARGO_TARGET_DIR                          honoured; default DIR/target
#
# A mutant file holds hunks: `file PATH` (relative to raft-core/) selects the
# file, then `<<<` exact original lines `===` replacement lines `>>>`. The
# original must occur exactly once, or the runner stops: a mutant that no
# longer applies is a broken claim, not a caught mutant.
# Exit status: 0 if every mutant was caught, 1 if one was not, 2 on a
# mutant that does not apply or does not compile.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate="$(dirname "$here")"
root="$(git -C "$crate" rev-parse --show-toplevel)"
rel_crate="${crate#"$root"/}"
seeds="${QUORATE_MUTANT_SEEDS:-1000}"
scratch="${QUORATE_MUTANT_SCRATCH:-/tmp/quorate-mutants}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$scratch/target}"
ws="$scratch/ws"

die() { echo "mutants: $*" >&2; exit 2; }

# A fresh copy of the tracked and untracked (not ignored) files.
copy_workspace() {
    rm -rf "$ws"
    mkdir -p "$ws"
    (cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$ws"
}

# Replaces the one occurrence of the text in file $2 by the text in file $3
# inside file $1 (literal text, so perl's index, not a regex).
replace_once() {
    perl -e '
        local $/;
        my ($target, $find, $replace) = @ARGV;
        open(my $fh, "<", $target) or die "$target: $!\n"; my $text = <$fh>; close $fh;
        open($fh, "<", $find) or die; my $old = <$fh>; close $fh;
        open($fh, "<", $replace) or die; my $new = <$fh>; close $fh;
        my $at = index($text, $old);
        exit 3 if $at < 0;
        exit 4 if index($text, $old, $at + 1) >= 0;
        substr($text, $at, length $old) = $new;
        open($fh, ">", $target) or die; print $fh $text; close $fh;
    ' "$@"
}

# Applies the hunks of mutant file $1 inside the scratch crate.
apply_mutant() {
    local mutant="$1" file="" state="none" line target rc
    local find="$scratch/find" replace="$scratch/replace"
    while IFS= read -r line || [[ -n "$line" ]]; do
        case "$state" in
        none)
            case "$line" in
            '#'* | '') ;;
            'file '*) file="${line#file }" ;;
            '<<<') state=find; : >"$find" ;;
            *) die "$mutant: unexpected line: $line" ;;
            esac
            ;;
        find)
            if [[ "$line" == '===' ]]; then state=replace; : >"$replace"; else printf '%s\n' "$line" >>"$find"; fi
            ;;
        replace)
            if [[ "$line" == '>>>' ]]; then
                [[ -n "$file" ]] || die "$mutant: hunk before any 'file' line"
                target="$ws/$rel_crate/$file"
                [[ -f "$target" ]] || die "$mutant: no file $file"
                rc=0
                replace_once "$target" "$find" "$replace" || rc=$?
                case "$rc" in
                0) ;;
                3) die "$mutant: snippet not found in $file:"$'\n'"$(cat "$find")" ;;
                4) die "$mutant: snippet occurs more than once in $file:"$'\n'"$(cat "$find")" ;;
                *) die "$mutant: could not edit $file" ;;
                esac
                state=none
            else
                printf '%s\n' "$line" >>"$replace"
            fi
            ;;
        esac
    done <"$mutant"
    [[ "$state" == none ]] || die "$mutant: unterminated hunk"
}

if [[ $# -gt 0 ]]; then
    mutants=()
    for name in "$@"; do
        name="${name%.mutant}"
        [[ -f "$here/$name.mutant" ]] || die "no mutant $name"
        mutants+=("$here/$name.mutant")
    done
else
    mutants=("$here"/*.mutant)
fi

# Check every mutant applies before spending minutes on the first.
for m in "${mutants[@]}"; do
    copy_workspace
    apply_mutant "$m"
done

status=0
results=()
for m in "${mutants[@]}"; do
    name="$(basename "$m" .mutant)"
    copy_workspace
    apply_mutant "$m"
    log="$scratch/$name.log"
    echo "== $name: $seeds seeds" >&2
    if ! (cd "$ws" && cargo test -p quorate-raft-core --test simulation --no-run) >"$log" 2>&1; then
        echo "mutants: $name does not compile, see $log" >&2
        exit 2
    fi
    started=$(date +%s)
    (cd "$ws" && QUORATE_SIM_SEEDS="$seeds" QUORATE_SIM_KEEP_GOING=1 cargo test -p quorate-raft-core --test simulation \
        -- safety_liveness_and_linearizability_under_faults) >"$log" 2>&1 || true
    took=$(( $(date +%s) - started ))
    # Each shard reports how many of its seeds failed and its first
    # failure; the smallest over the shards is the first failing seed.
    first="$(sed -n 's/.*simulation seed \([0-9]*\) failed: .*/\1/p' "$log" | sort -n | head -1)"
    # (grep finds nothing when no seed failed: not an error under pipefail)
    failed="$({ grep -o '^[0-9]* of [0-9]* seeds failed' "$log" || true; } | awk '{ n += $1 } END { print n + 0 }')"
    if [[ -n "$first" ]]; then
        what="$(sed -n "s/.*simulation seed $first failed: //p" "$log" | head -1)"
        results+=("$(printf '%-40s caught at seed %-5s in %4s of %s seeds %4ss  %s' "$name" "$first" "$failed" "$seeds" "$took" "$what")")
    elif grep -q 'test result: ok' "$log"; then
        results+=("$(printf '%-40s NOT CAUGHT in %s seeds %4ss' "$name" "$seeds" "$took")")
        status=1
    else
        echo "mutants: $name: the simulation test failed without a seed, see $log" >&2
        exit 2
    fi
    echo "${results[-1]}" >&2
done

echo
printf '%s\n' "${results[@]}"
exit "$status"
