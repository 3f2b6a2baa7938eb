# The main fused kernels of the quick bench shapes (bf16 4096 x 8192), shared by gpu-profile.sh and
# gpu-sass.sh: "name:mangled-name regex[:groups of 16 per launch]" (default QUICK_GROUPS). In the
# regexes: pass 0 = quantize, 1 = amax; quantizer enum 0 rtn, 1 four_over_six, 3 sr, 4 ms_eden_g16,
# 5 ms_eden_g128, 6 mxfp4_quest, 7 mxfp4_rtn; then the rotation size and the source.
QUICK_GROUPS=$((4096 * 8192 / 16))
MAIN_KERNELS=(
  "rtn:fused_rowwise_kernelILb0ELNS_13QuantizerKindE0ELi0E13__nv_bfloat16"
  "amax:fused_rowwise_kernelILb1ELNS_13QuantizerKindE0ELi0E13__nv_bfloat16"
  "four_over_six:fused_rowwise_kernelILb0ELNS_13QuantizerKindE1ELi0E13__nv_bfloat16"
  "ms_eden_g16_rht128_rowwise:fused_rowwise_kernelILb0ELNS_13QuantizerKindE4ELi128E13__nv_bfloat16"
  "ms_eden_g16_rht128_transposed:fused_tile_kernelILb0ELNS_13QuantizerKindE4ELi128ENS1_18TransposedBf16Tile"
  "ms_eden_g16_rht128_requant:fused_tile_kernelILb0ELNS_13QuantizerKindE4ELi128ENS1_11RequantTile"
  "eden_g16_finish_dequantize:eden_g16_finish_dequantize_kernel"
  "eden_g16_finish:eden_g16_finish_kernel"
  "mxfp4_quest_rht32_rowwise:fused_rowwise_kernelILb0ELNS_13QuantizerKindE6ELi32E13__nv_bfloat16"
  "mxfp4_rtn_rht32_rowwise:fused_rowwise_kernelILb0ELNS_13QuantizerKindE7ELi32E13__nv_bfloat16"
  "dequantize_nvfp4_bf16:dequantize_bf16_kernelILNS_13ElementFormatE0E:$((4096 * 1024 / 16))"
)
