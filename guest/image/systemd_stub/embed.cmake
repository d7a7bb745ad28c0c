# cmake -DINPUT=lib.so -DOUTPUT=out.cpp -P embed.cmake: the file's bytes as a C++ array (chrys::guest::kSystemdStub).
file(READ ${INPUT} hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
file(WRITE ${OUTPUT} "// Generated from ${INPUT} by embed.cmake.\n#include <cstddef>\n\nnamespace chrys::guest {\n\n"
  "extern const unsigned char kSystemdStub[] = {\n${bytes}};\nextern const size_t kSystemdStubSize = ${size};\n\n}  // namespace chrys::guest\n")
