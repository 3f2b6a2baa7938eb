#!/usr/bin/env python3
"""Extract Jane Austen's six novels (public domain) from Debian's r-cran-janeaustenr package
into data/corpus/austen/*.txt.gz: the provenance of Quartet's embedded default corpus.

    apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb pkg
    python3 scripts/extract_austen.py pkg/usr/lib/R/site-library/janeaustenr/data data/corpus/austen

Rdata.rdx (zlib, 4-byte length prefix) is an R XDR-serialized list of (offset, length) pairs
and names; each entry of Rdata.rdb at that offset is again a 4-byte length + zlib stream of
an XDR-serialized character vector, one element per line of the book.
"""
import gzip
import os
import struct
import sys
import zlib


class Xdr:
    def __init__(self, data):
        assert data[:2] == b"X\n", "not an XDR serialization"
        self.d, self.p = data, 2
        self.refs = []  # symbols, in the order they appear (REFSXP points back at them)
        self.int(), self.int(), self.int()  # format version, R version, minimal R version
        n = self.int()  # native encoding (version 3)
        self.p += n

    def int(self):
        v = struct.unpack(">i", self.d[self.p:self.p + 4])[0]
        self.p += 4
        return v

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr = flags & (1 << 9)
        if kind == 16:  # STRSXP
            out = [self.item() for _ in range(self.int())]
        elif kind == 19:  # VECSXP
            out = [self.item() for _ in range(self.int())]
        elif kind in (10, 13):  # LGLSXP, INTSXP
            out = [self.int() for _ in range(self.int())]
        elif kind == 14:  # REALSXP
            n = self.int()
            out = list(struct.unpack(f">{n}d", self.d[self.p:self.p + 8 * n]))
            self.p += 8 * n
        elif kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            out = self.d[self.p:self.p + n].decode("utf-8")
            self.p += n
            return out
        elif kind == 254:  # NILVALUE
            return None
        elif kind == 2:  # LISTSXP (pairlist), used for attributes
            attrs = {}
            while kind == 2:
                if flags & (1 << 10):
                    tag = self.item()
                else:
                    tag = None
                attrs[tag] = self.item()
                flags = self.int()
                kind = flags & 0xFF
            return attrs
        elif kind == 1:  # SYMSXP
            self.refs.append(self.item())
            return self.refs[-1]
        elif kind == 255:  # REFSXP
            ref = flags >> 8
            return self.refs[(ref if ref else self.int()) - 1]
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            attrs = self.item()
            return (out, attrs)
        return out


def unzip(blob):
    n = struct.unpack(">I", blob[:4])[0]
    data = zlib.decompress(blob[4:])
    assert len(data) == n
    return data


def main(src, dst):
    index = Xdr(gzip.open(os.path.join(src, "Rdata.rdx")).read()).item()
    entries, attrs = index[0][0]  # list(variables = <offsets, names>, references, compressed)
    names = attrs["names"]
    rdb = open(os.path.join(src, "Rdata.rdb"), "rb").read()
    os.makedirs(dst, exist_ok=True)
    for name, (offset, length) in zip(names, entries):
        lines = Xdr(unzip(rdb[offset:offset + length])).item()
        if isinstance(lines, tuple):
            lines = lines[0]
        text = "\n".join(l if l is not None else "" for l in lines).strip() + "\n"
        with gzip.GzipFile(os.path.join(dst, f"{name}.txt.gz"), "wb", compresslevel=9, mtime=0) as f:
            f.write(text.encode("utf-8"))
        print(f"{name}: {len(lines)} lines, {len(text)} characters")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
