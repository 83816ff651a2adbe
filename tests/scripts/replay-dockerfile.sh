#!/usr/bin/env bash
# Replays the build steps of a Dockerfile on this machine, without a Docker engine:
#
#   tests/scripts/replay-dockerfile.sh Dockerfile.sidecar [context-dir]
#
# A developer tool (not run in CI) that shows the RUN steps of Dockerfile.sidecar and
# Dockerfile.controller work on the build context that .dockerignore leaves, and that the
# final stage gets a binary that runs. What it does:
#
#   - builds the context: the files under context-dir (default: the git top level) that
#     `git ls-files` lists, tracked or not, minus those .dockerignore excludes;
#   - gives every stage its own directory under $REPLAY_DIR/stages/<stage>/ standing for the
#     stage's root file system; `FROM <earlier stage>` starts from a copy of that stage's
#     directory and WORKDIR, `FROM <image>` from an empty one;
#   - WORKDIR creates the directory; COPY copies from the context or, with --from, from an
#     earlier stage's directory (a directory source copies its contents, like Docker);
#   - RUN runs the command with `sh -c` in the stage's WORKDIR, timed;
#   - at the end, runs the final stage's exec-form ENTRYPOINT with --help, and prints the
#     binary's size and `ldd` output.
#
# Limits (it is a replay, not a container build):
#   - RUN uses this machine's tools, not the base image's: the local rustc/cargo (a warning is
#     printed when the version differs from a rust:X image tag), ~/.cargo/config.toml, the
#     local registry cache. Absolute paths in a RUN command refer to this machine. `cargo
#     install` goes to $REPLAY_DIR/cargo-install (put first on PATH), shared by all stages.
#   - RUN steps in a stage based on an external image other than rust:* are refused (the
#     image's file system is not there); so are ENV, ADD, exec-form RUN, COPY globs, and
#     any instruction it does not know. ARG, LABEL, EXPOSE, USER and CMD are ignored;
#     COPY --chown/--chmod/--link are ignored (ownership is not replayed).
#   - .dockerignore is applied with git's matcher (--exclude-from); the script refuses
#     patterns whose meaning may differ between git and Docker (not starting with `/` or
#     `**/`, or starting with `!`).
#   - No layer cache: every run starts from scratch unless REPLAY_DIR points to an old run
#     (then cargo-chef is not installed again, and the stage directories are rebuilt).
#   - CARGO_TARGET_DIR and CARGO_BUILD_TARGET_DIR are unset so target/ lands in the stage,
#     as in the image. Other CARGO_* variables pass through: for a faster, less faithful
#     run, e.g. CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 <Dockerfile> [context-dir]" >&2
  exit 2
fi
dockerfile=$(realpath "$1")
context=$(realpath "${2:-$(git -C "$(dirname "$dockerfile")" rev-parse --show-toplevel)}")
REPLAY_DIR=${REPLAY_DIR:-$(mktemp -d -t replay-dockerfile.XXXXXX)}
mkdir -p "$REPLAY_DIR"
REPLAY_DIR=$(realpath "$REPLAY_DIR")
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
export CARGO_INSTALL_ROOT="$REPLAY_DIR/cargo-install"
export PATH="$CARGO_INSTALL_ROOT/bin:$PATH"

die() { echo "replay: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

echo "replay: $dockerfile"
echo "replay: context $context, scratch $REPLAY_DIR"
env | grep -E '^(CARGO_PROFILE_|RUSTFLAGS|CARGO_BUILD_)' | sed 's/^/replay: env /' || true

# --- the build context -------------------------------------------------------------------
ctx="$REPLAY_DIR/context"
rm -rf "$ctx"
mkdir -p "$ctx"
ignore="$context/.dockerignore"
if [ -f "$ignore" ]; then
  while IFS= read -r p || [ -n "$p" ]; do
    p="${p#"${p%%[![:space:]]*}"}"
    p="${p%"${p##*[![:space:]]}"}"
    case "$p" in
      '' | '#'*) ;;
      '!'*) die ".dockerignore: '$p': exceptions are not replayed" ;;
      /* | '**/'*) ;;
      *) die ".dockerignore: '$p': anchor it with / or **/ (git and Docker read it differently)" ;;
    esac
  done <"$ignore"
  excl=(--exclude-from="$ignore")
else
  excl=()
fi
(
  cd "$context"
  # tracked files, minus tracked ones that are excluded, plus untracked ones not excluded
  comm -z -23 <(git ls-files -z --cached | sort -zu) \
    <(git ls-files -z --cached --ignored "${excl[@]}" | sort -zu)
  git ls-files -z --others "${excl[@]}"
) | sort -zu | (cd "$context" && while IFS= read -r -d '' f; do
  if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
done) | tar -C "$context" --null -T - -cf - | tar -C "$ctx" -xf -
echo "replay: context has $(find "$ctx" -type f | wc -l) files, $(du -sh "$ctx" | cut -f1)"

# --- parse: one instruction per line, continuations joined, comments dropped ---------------
instructions=()
buf=""
while IFS= read -r line || [ -n "$line" ]; do
  trimmed="${line#"${line%%[![:space:]]*}"}"
  case "$trimmed" in '#'*) continue ;; esac
  if [[ "$line" =~ \\[[:space:]]*$ ]]; then
    buf+="${line%\\*} "
    continue
  fi
  buf+="$line"
  if [[ "$buf" =~ [^[:space:]] ]]; then instructions+=("$buf"); fi
  buf=""
done <"$dockerfile"
[ -z "$buf" ] || die "the last line ends with a continuation"

# --- replay ----------------------------------------------------------------------------------
declare -A stage_dir stage_workdir stage_image
stage="" image="" workdir="/" root="" entrypoint="" n=0
summary=()
path_in() { # <root> <workdir> <path>: the host path of <path> in a stage
  case "$3" in
    /*) printf '%s%s' "$1" "$3" ;;
    *) printf '%s%s/%s' "$1" "${2%/}" "$3" ;;
  esac
}
for ins in "${instructions[@]}"; do
  ins="${ins#"${ins%%[![:space:]]*}"}"
  kw="${ins%%[[:space:]]*}"
  args="${ins#"$kw"}"
  args="${args#"${args%%[![:space:]]*}"}"
  kw="${kw^^}"
  case "$kw" in
    FROM)
      read -r -a f <<<"$args"
      [[ "${f[0]}" != --* ]] || die "FROM flags are not replayed: $ins"
      n=$((n + 1))
      stage="stage$n"
      if [ ${#f[@]} -ge 3 ] && [ "${f[1],,}" = as ]; then stage="${f[2]}"; fi
      root="$REPLAY_DIR/stages/$stage"
      rm -rf "$root"
      mkdir -p "$REPLAY_DIR/stages"
      if [ -n "${stage_dir[${f[0]}]:-}" ]; then
        cp -a "${stage_dir[${f[0]}]}" "$root"
        workdir="${stage_workdir[${f[0]}]}"
        image="${stage_image[${f[0]}]}"
      else
        mkdir -p "$root"
        workdir="/"
        image="${f[0]}"
        case "$image" in
          rust:*)
            want="${image#rust:}"
            want="${want%%-*}"
            have=$(rustc --version | awk '{print $2}')
            case "$have" in
              "$want" | "$want".*) ;;
              *) echo "replay: WARNING: $image has Rust $want, this machine has $have" >&2 ;;
            esac
            ;;
        esac
      fi
      stage_dir[$stage]="$root"
      stage_image[$stage]="$image"
      stage_workdir[$stage]="$workdir"
      echo "replay: --- stage $stage (FROM ${f[0]})"
      ;;
    WORKDIR)
      [ -n "$stage" ] || die "$kw before FROM"
      case "$args" in /*) workdir="$args" ;; *) workdir="${workdir%/}/$args" ;; esac
      mkdir -p "$root$workdir"
      stage_workdir[$stage]="$workdir"
      ;;
    COPY)
      [ -n "$stage" ] || die "$kw before FROM"
      read -r -a words <<<"$args"
      from=""
      while [[ "${words[0]}" == --* ]]; do
        case "${words[0]}" in
          --from=*) from="${words[0]#--from=}" ;;
          --chown=* | --chmod=* | --link) echo "replay: ignoring ${words[0]}" ;;
          *) die "COPY flag not replayed: ${words[0]}" ;;
        esac
        words=("${words[@]:1}")
      done
      [[ "${words[0]}" != '['* ]] || die "exec-form COPY is not replayed: $ins"
      [ ${#words[@]} -ge 2 ] || die "COPY needs a source and a destination: $ins"
      dest="${words[-1]}"
      dest_host=$(path_in "$root" "$workdir" "$dest")
      for src in "${words[@]:0:${#words[@]}-1}"; do
        [[ "$src" != *[*?[]* ]] || die "COPY globs are not replayed: $src"
        if [ -n "$from" ]; then
          [ -n "${stage_dir[$from]:-}" ] || die "COPY --from=$from: no such earlier stage"
          src_host=$(path_in "${stage_dir[$from]}" "${stage_workdir[$from]}" "$src")
        else
          src_host="$ctx/${src#/}"
        fi
        [ -e "$src_host" ] || die "COPY source missing: $src${from:+ (in stage $from)}"
        if [ -d "$src_host" ]; then
          mkdir -p "$dest_host"
          cp -a "$src_host/." "$dest_host/"
        elif [[ "$dest" == */ ]] || [ -d "$dest_host" ]; then
          mkdir -p "$dest_host"
          cp -a "$src_host" "$dest_host/"
        else
          mkdir -p "$(dirname "$dest_host")"
          cp -a "$src_host" "$dest_host"
        fi
      done
      echo "replay: COPY ${from:+--from=$from }${words[*]}"
      ;;
    RUN)
      [ -n "$stage" ] || die "$kw before FROM"
      [[ "$args" != '['* ]] || die "exec-form RUN is not replayed: $ins"
      [[ "$args" != --* ]] || die "RUN flags are not replayed: $ins"
      case "$image" in
        rust:*) ;;
        *) die "RUN in a stage based on $image cannot be replayed here: $ins" ;;
      esac
      echo "replay: RUN $args   (in $workdir)"
      t0=$(now)
      (cd "$root$workdir" && sh -c "$args")
      took=$(elapsed "$t0")
      echo "replay: ... done in $took"
      summary+=("$took  [$stage] RUN $args")
      ;;
    ENTRYPOINT)
      [[ "$args" == '['* ]] || die "ENTRYPOINT is not exec-form: $ins"
      entrypoint=$(sed -E 's/^\[[[:space:]]*"([^"]*)".*/\1/' <<<"$args")
      ;;
    ARG | LABEL | EXPOSE | USER | CMD) ;;
    *) die "instruction not replayed: $ins" ;;
  esac
done

# --- the final stage's binary --------------------------------------------------------------
echo "replay: --- summary"
for s in "${summary[@]}"; do echo "  $s"; done
[ -n "$entrypoint" ] || die "no ENTRYPOINT"
bin="$root$entrypoint"
[ -x "$bin" ] || die "the ENTRYPOINT $entrypoint is not an executable in the final stage"
echo "replay: final stage $stage: $entrypoint, $(stat -c %s "$bin") bytes"
ldd "$bin" | sed 's/^/  ldd: /'
echo "replay: $entrypoint --help"
"$bin" --help
echo "replay: ok"
