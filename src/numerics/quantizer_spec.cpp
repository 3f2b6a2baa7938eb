#include <cmath>
#include <fmt/format.h>

#include "quartet/error.h"
#include "quartet/numerics/quantizer.h"

namespace quartet {

std::string_view quantizer_name(QuantizerKind kind) {
  switch (kind) {
    case QuantizerKind::rtn: return "rtn";
    case QuantizerKind::four_over_six: return "four_over_six";
    case QuantizerKind::square16: return "square16";
    case QuantizerKind::sr: return "sr";
    case QuantizerKind::ms_eden_g16: return "ms_eden_g16";
    case QuantizerKind::ms_eden_g128: return "ms_eden_g128";
    case QuantizerKind::mxfp4_quest: return "mxfp4_quest";
    case QuantizerKind::mxfp4_rtn: return "mxfp4_rtn";
    case QuantizerKind::mxfp4_sr: return "mxfp4_sr";
  }
  return "?";
}

std::string quantizer_names_joined(std::string_view separator) {
  std::string out;
  for (QuantizerKind k : kAllQuantizers) {
    if (!out.empty()) out += separator;
    out += quantizer_name(k);
  }
  return out;
}

QuantizerKind parse_quantizer(std::string_view name) {
  for (QuantizerKind k : kAllQuantizers) {
    if (quantizer_name(k) == name) return k;
  }
  throw Error(fmt::format("unknown quantizer '{}'; expected one of: {}", name, quantizer_names_joined()));
}

ElementFormat quantizer_format(QuantizerKind kind) {
  switch (kind) {
    case QuantizerKind::mxfp4_quest:
    case QuantizerKind::mxfp4_rtn:
    case QuantizerKind::mxfp4_sr: return ElementFormat::mxfp4;
    default: return ElementFormat::nvfp4;
  }
}

bool is_stochastic(QuantizerKind kind) {
  return kind == QuantizerKind::sr || kind == QuantizerKind::ms_eden_g16 ||
         kind == QuantizerKind::ms_eden_g128 || kind == QuantizerKind::mxfp4_sr;
}

namespace {

bool has_clip(QuantizerKind k) {
  return k == QuantizerKind::rtn || k == QuantizerKind::square16 || k == QuantizerKind::ms_eden_g16 ||
         k == QuantizerKind::ms_eden_g128;
}

bool has_headroom(QuantizerKind k) {
  return k == QuantizerKind::sr || k == QuantizerKind::ms_eden_g16 || k == QuantizerKind::ms_eden_g128;
}

}  // namespace

QuantizerSpec QuantizerSpec::defaults(QuantizerKind kind) {
  QuantizerSpec s;
  s.kind = kind;
  if (kind == QuantizerKind::sr) s.headroom = 17.0 / 16.0;
  if (kind == QuantizerKind::ms_eden_g16 || kind == QuantizerKind::ms_eden_g128) {
    s.clip = 0.93;
    s.headroom = 17.0 / 16.0;
  }
  return s;
}

float QuantizerSpec::val_max() const { return static_cast<float>(6.0 / (clip * headroom)); }

void QuantizerSpec::validate() const {
  const std::string_view name = quantizer_name(kind);
  if (!std::isfinite(clip) || !(clip > 0.0) || clip > 16.0) {
    throw Error(fmt::format("quantizer {}: clip factor must be in (0, 16], got {}", name, clip));
  }
  if (!std::isfinite(headroom) || !(headroom >= 1.0) || headroom > 16.0) {
    throw Error(fmt::format("quantizer {}: headroom must be in [1, 16], got {}", name, headroom));
  }
  if (!has_clip(kind) && clip != 1.0) {
    throw Error(fmt::format("quantizer {} has no clip factor (got clip {})", name, clip));
  }
  if (!has_headroom(kind) && headroom != 1.0) {
    throw Error(fmt::format("quantizer {} has no headroom factor (got headroom {})", name, headroom));
  }
}

}  // namespace quartet
