#!/bin/sh
# Packaging test (issue 19 item 4): install a build into a staging
# directory (DESTDIR), then check what a distribution or a user relies on:
#   - a program built with `pkg-config --cflags --libs stele` links against
#     the installed libstele.so and runs;
#   - libstele.so exports only stele_* symbols (nm -D);
#   - the man pages render with man -l and no warnings;
#   - systemd-analyze verify accepts the unit;
#   - the bash completion loads and completes.
# Usage: test_install.sh BUILD_DIR
set -eu
BUILD=$(cd "${1:?usage: test_install.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "test_install: FAIL: $*" >&2; exit 1; }

DESTDIR="$T/root" cmake --install "$BUILD" >"$T/install.log" 2>&1 ||
  { cat "$T/install.log"; fail "cmake --install"; }
ROOT="$T/root"
PREFIX=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD/CMakeCache.txt")

# Every piece is where a packager expects it.
PC=$(find "$ROOT" -name stele.pc)
[ -n "$PC" ] || fail "no stele.pc installed"
for f in "$PREFIX/bin/stele" "$PREFIX/include/stele.h" \
         "$PREFIX/share/man/man1/stele.1" "$PREFIX/share/man/man1/stele-serve.1" \
         "$PREFIX/share/man/man3/libstele.3" "$PREFIX/share/bash-completion/completions/stele"; do
  [ -e "$ROOT$f" ] || fail "missing $f"
done
LIBDIR=$(dirname "$(dirname "$PC")")
for f in libstele.so libstele.a; do
  [ -e "$LIBDIR/$f" ] || fail "missing $LIBDIR/$f"
done
UNIT=$(find "$ROOT" -name stele.service)
[ -n "$UNIT" ] || fail "no stele.service installed"

# pkg-config finds the library; a program built with its flags alone links
# against the installed shared library (not the build tree's) and runs.
export PKG_CONFIG_PATH="$(dirname "$PC")" PKG_CONFIG_SYSROOT_DIR="$ROOT"
[ "$(pkg-config --modversion stele)" = "$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$BUILD/CMakeCache.txt")" ] ||
  fail "pkg-config --modversion stele: $(pkg-config --modversion stele 2>&1)"
# shellcheck disable=SC2046
cc -o "$T/consumer" "$HERE/consumer.c" $(pkg-config --cflags --libs stele) ||
  fail "building with pkg-config --cflags --libs stele"
out=$(LD_LIBRARY_PATH="$LIBDIR" "$T/consumer" "$T/store") || fail "consumer: $out"
echo "$out" | grep -q " ok revision 0 position 0" || fail "consumer printed: $out"
LD_LIBRARY_PATH="$LIBDIR" ldd "$T/consumer" | grep libstele | grep -q "$LIBDIR" ||
  fail "consumer is not linked against the installed libstele.so"

# Only the public API leaves the shared library.
nm -D --defined-only "$LIBDIR/libstele.so" | awk '{print $3}' >"$T/syms"
[ -s "$T/syms" ] || fail "libstele.so exports nothing"
if grep -v '^stele_' "$T/syms" >"$T/bad"; then
  fail "libstele.so exports non-stele_ symbols: $(head -20 "$T/bad" | tr '\n' ' ')"
fi
# ... and all of the public API: every function stele.h declares carries
# STELE_API on the line before it (a declaration added without it would be
# missing from libstele.so), and every one is exported.
H="$ROOT$PREFIX/include/stele.h"
unmarked=$(awk 'prev != "STELE_API" && /^(const |double |int |size_t |uint32_t |uint64_t |int64_t |void |unsigned |char |stele_)[^(]*stele_[a-z0-9_]*\(/ {print FNR": "$0} {prev=$0}' "$H")
[ -z "$unmarked" ] || fail "declarations in stele.h without STELE_API: $unmarked"
awk 'prev == "STELE_API" {if (match($0, /stele_[a-z0-9_]*\(/)) print substr($0, RSTART, RLENGTH - 1)} {prev=$0}' "$H" |
  sort >"$T/decl"
sort "$T/syms" >"$T/syms.sorted"
[ "$(wc -l <"$T/decl")" -gt 50 ] || fail "too few STELE_API declarations found in stele.h"
missing=$(comm -23 "$T/decl" "$T/syms.sorted")
[ -z "$missing" ] || fail "declared but not exported: $missing"
extra=$(comm -13 "$T/decl" "$T/syms.sorted")
[ -z "$extra" ] || fail "exported but not declared in stele.h: $extra"

# The man pages render, without a warning from groff.
for page in man1/stele.1 man1/stele-serve.1 man3/libstele.3; do
  MANWIDTH=80 man --warnings -l "$ROOT$PREFIX/share/man/$page" >"$T/page.txt" 2>"$T/page.err" ||
    fail "man -l $page"
  [ ! -s "$T/page.err" ] || fail "man -l $page warns: $(cat "$T/page.err")"
  grep -q "NAME" "$T/page.txt" || fail "man -l $page: no NAME section"
  grep -q "@STELE_VERSION@" "$ROOT$PREFIX/share/man/$page" && fail "$page: version not filled in"
done

# systemd accepts the unit. verify checks that ExecStart's binary exists
# and that the Documentation= man page is found, so it runs on a copy that
# points into the staging root, with the staged man pages on MANPATH.
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir "$T/unit"
  sed "s|^ExecStart=$PREFIX/bin/stele|ExecStart=$ROOT$PREFIX/bin/stele|" "$UNIT" >"$T/unit/stele.service"
  MANPATH="$ROOT$PREFIX/share/man:" systemd-analyze verify "$T/unit/stele.service" >"$T/verify.log" 2>&1 ||
    fail "systemd-analyze verify: $(cat "$T/verify.log")"
  if grep -v -e "^$" "$T/verify.log" | grep -q .; then
    fail "systemd-analyze verify warns: $(cat "$T/verify.log")"
  fi
  grep -q "^ExecStart=$PREFIX/bin/stele serve" "$UNIT" || fail "unit's ExecStart is not $PREFIX/bin/stele"
else
  fail "systemd-analyze missing (scripts/deps.sh installs systemd)"
fi

# The bash completion loads and completes commands and query kinds.
got=$(bash -c '. "$1"; COMP_WORDS=(stele que); COMP_CWORD=1; _stele; echo "${COMPREPLY[*]}"' _ \
      "$ROOT$PREFIX/share/bash-completion/completions/stele")
[ "$got" = query ] || fail "completion of 'stele que' gave '$got'"
got=$(bash -c '. "$1"; COMP_WORDS=(stele query caus); COMP_CWORD=2; _stele; echo "${COMPREPLY[*]}"' _ \
      "$ROOT$PREFIX/share/bash-completion/completions/stele")
[ "$got" = causation ] || fail "completion of 'stele query caus' gave '$got'"

echo "test_install: ok ($(wc -l <"$T/syms") symbols exported, all stele_)"
