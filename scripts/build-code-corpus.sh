#!/usr/bin/env bash
# Builds the GPU machine's real-text corpus reproducibly: the source and documentation files of
# its Python environment and of /usr/include (code and prose, a few hundred million GPT-2
# tokens; docs/fidelity.md), tokenized by `quartet prepare` on every core. The list of files is
# sorted bytewise and the documents are then put in an order drawn from seed 1 (listed by path,
# training would go through one package at a time), so the same machine image gives the same
# corpus; sources.tsv in the output
# records each file's size, SHA-256 and token count, and which were skipped (binary, or the same
# bytes as an earlier file).
#   scripts/build-code-corpus.sh QUARTET OUT [ROOT...]
# ROOTs default to /opt/torch/.venv/lib/python3.12/site-packages and /usr/include.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 QUARTET OUT [ROOT...]" >&2
  exit 2
fi
quartet=$1
out=$2
shift 2
roots=("$@")
[ ${#roots[@]} -gt 0 ] || roots=(/opt/torch/.venv/lib/python3.12/site-packages /usr/include)
for root in "${roots[@]}"; do
  [ -d "$root" ] || { echo "build-code-corpus: $root is not a folder" >&2; exit 1; }
done
list=$(mktemp)
trap 'rm -f "$list"' EXIT
# Text by extension; files over 4 MB are generated tables or bundles, not text worth learning.
find "${roots[@]}" -type f -size -4M \( -name '*.py' -o -name '*.pyi' -o -name '*.md' -o -name '*.rst' \
  -o -name '*.txt' -o -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' \
  -o -name '*.cu' -o -name '*.cuh' \) -print | LC_ALL=C sort > "$list"
echo "build-code-corpus: $(wc -l < "$list") files under ${roots[*]}"
"$quartet" prepare --files-from "$list" --out "$out" --name code --tokenizer gpt2 --skip-binary --dedupe --shuffle 1 --force
