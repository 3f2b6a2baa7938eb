// SHA-256 (FIPS 180-4) through OpenSSL's libcrypto: the digests `sha256sum` prints, so that a
// corpus manifest can be checked with the usual tools.
#pragma once

#include <string>
#include <string_view>

namespace quartet {

// 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

}  // namespace quartet
