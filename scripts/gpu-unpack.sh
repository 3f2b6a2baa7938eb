# Sourced by the bundle's scripts (scripts/gpu-bundle.sh) from inside .gpu/ on the GPU machine:
# unpacks what the bundle carries compressed and puts its libraries on the library path.
for gz in lib/*.gz quartet.gz cuda_tests.gz; do
  if [ -f "$gz" ]; then gunzip -f "$gz"; fi
done
for program in quartet cuda_tests; do
  if [ -f "$program" ]; then chmod +x "$program"; fi
done
export LD_LIBRARY_PATH=$PWD/lib:${LD_LIBRARY_PATH:-}
