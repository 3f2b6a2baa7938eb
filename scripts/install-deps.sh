#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Quartet builds against. Safe to run again.
# The CUDA toolkit is optional: when nvcc is on PATH (or in /usr/local/cuda) and the machine has
# an NVIDIA GPU (or with -DQUARTET_CUDA=ON), the CUDA parts are compiled too; nothing here
# installs it.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-openmp-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libpcre2-dev zlib1g-dev libssl-dev
  gnuplot-nox python3
)
# --fuzz: also clang and its runtimes, for the libFuzzer targets (tests/fuzz, scripts/fuzz.sh).
# --torch: also Debian's PyTorch, for the python.* tests of the quartet package (python/), which
# report themselves skipped without it.
for option in "$@"; do
  case "$option" in
    --fuzz) packages+=(clang libclang-rt-dev libomp-dev) ;;
    --torch) packages+=(python3-torch) ;;
    *)
      echo "install-deps: unknown argument '$option' (the options are --fuzz and --torch)" >&2
      exit 2
      ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
