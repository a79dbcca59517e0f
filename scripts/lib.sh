# Helpers the scripts source (not run on its own).

# The directory cargo builds into: `target/` unless CARGO_TARGET_DIR or a cargo config moves
# it, so scripts find the binaries wherever they are. Prints the path.
target_dir() {
  cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
    | grep -o '"target_directory":"[^"]*"' | head -n1 | cut -d'"' -f4
}

# The path of the release build of binary $1; fails if cargo's target directory is unknown.
release_bin() {
  local dir
  dir=$(target_dir)
  if [ -z "$dir" ]; then
    echo "cannot find cargo's target directory (cargo metadata failed)" >&2
    return 1
  fi
  echo "$dir/release/$1"
}
