#include "guest/hal/dm/dm_setup.h"

#include <fcntl.h>
#include <libcryptsetup.h>
#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>

#include "base/unique_fd.h"

namespace chrys::guest::hal {
namespace {

constexpr size_t kVolumeKeyBytes = 64;             // aes-xts-plain64 with two 256-bit keys
constexpr size_t kRootHashBytes = 32;              // sha256
constexpr uint64_t kLuksDataOffsetSectors = 4096;  // 2 MiB: the header and a small keyslot area fit before it
constexpr uint64_t kLuksMetadataBytes = 16 << 10;
constexpr uint64_t kLuksKeyslotsBytes = 1 << 20;

struct CryptFree {
  void operator()(crypt_device* cd) const { crypt_free(cd); }
};
using CryptDevice = std::unique_ptr<crypt_device, CryptFree>;

// Holds key material and wipes it however the scope ends.
template <size_t N>
struct SecretBytes {
  std::array<char, N> bytes{};
  SecretBytes() = default;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes() { ::explicit_bzero(bytes.data(), bytes.size()); }
};

std::string CryptError(const std::string& what, int r) {
  return what + ": " + std::strerror(r < 0 ? -r : r);
}

bool IsAbsoluteDevice(const std::string& path) {
  return path.size() > 1 && path[0] == '/' && path.find('\0') == std::string::npos;
}

// Device-mapper names: short, no '/', nothing a shell or udev rule would trip over.
bool IsDmName(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return false;
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

bool HexToBytes(const std::string& hex, char* out, size_t n) {
  if (hex.size() != 2 * n) {
    return false;
  }
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    return -1;
  };
  for (size_t i = 0; i < n; ++i) {
    int hi = nibble(hex[2 * i]);
    int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return true;
}

base::Status FillRandom(char* out, size_t n) {
  size_t got = 0;
  for (int attempts = 0; got < n && attempts < 64; ++attempts) {
    ssize_t r = ::getrandom(out + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r < 0 && errno != EINTR) {
      return base::SystemError("getrandom");
    }
  }
  if (got < n) {
    return base::Internal("getrandom returned too few bytes for the volume key");
  }
  return base::Status::Ok();
}

}  // namespace

base::Result<DmSetupRequest> ParseDmSetupArgs(const std::vector<std::string>& args) {
  DmSetupRequest request;
  for (size_t i = 0; i < args.size();) {
    const std::string& flag = args[i];
    if (flag == "--verity") {
      if (request.verity) {
        return base::InvalidArgument("--verity given twice");
      }
      if (args.size() - i < 5) {
        return base::InvalidArgument("--verity needs DATA_DEVICE HASH_DEVICE ROOTHASH NAME");
      }
      VerityOpen& v = request.verity_open;
      v = {args[i + 1], args[i + 2], args[i + 3], args[i + 4]};
      if (!IsAbsoluteDevice(v.data_device) || !IsAbsoluteDevice(v.hash_device)) {
        return base::InvalidArgument("--verity: the data and hash devices must be absolute paths, got '" +
                                     v.data_device + "' and '" + v.hash_device + "'");
      }
      if (v.data_device == v.hash_device) {
        return base::InvalidArgument("--verity: the data and hash devices are the same (" + v.data_device + ")");
      }
      char ignored[kRootHashBytes];
      if (!HexToBytes(v.roothash, ignored, sizeof(ignored))) {
        return base::InvalidArgument("--verity: the root hash must be 64 lower-case hex digits (sha256), got '" +
                                     v.roothash + "'");
      }
      if (!IsDmName(v.name)) {
        return base::InvalidArgument("--verity: '" + v.name + "' is not a device-mapper name ([A-Za-z0-9_-]{1,64})");
      }
      request.verity = true;
      i += 5;
    } else if (flag == "--luks") {
      if (request.luks) {
        return base::InvalidArgument("--luks given twice");
      }
      if (args.size() - i < 4) {
        return base::InvalidArgument("--luks needs DEVICE NAME LABEL");
      }
      LuksProvision& l = request.luks_provision;
      l = {args[i + 1], args[i + 2], args[i + 3]};
      if (!IsAbsoluteDevice(l.device)) {
        return base::InvalidArgument("--luks: the device must be an absolute path, got '" + l.device + "'");
      }
      if (!IsDmName(l.name)) {
        return base::InvalidArgument("--luks: '" + l.name + "' is not a device-mapper name ([A-Za-z0-9_-]{1,64})");
      }
      if (l.label.empty() || l.label.size() > 47) {
        return base::InvalidArgument("--luks: the label must be 1 to 47 characters");
      }
      request.luks = true;
      i += 4;
    } else {
      return base::InvalidArgument("unknown argument '" + flag + "' (expected --verity or --luks)");
    }
  }
  if (!request.verity && !request.luks) {
    return base::InvalidArgument("nothing to do: give --verity and/or --luks");
  }
  if (request.verity && request.luks &&
      (request.luks_provision.device == request.verity_open.data_device ||
       request.luks_provision.device == request.verity_open.hash_device)) {
    return base::InvalidArgument("--luks device " + request.luks_provision.device +
                                 " is the verity data or hash device: refusing to format it");
  }
  if (request.verity && request.luks && request.luks_provision.name == request.verity_open.name) {
    return base::InvalidArgument("--verity and --luks use the same mapping name '" + request.luks_provision.name + "'");
  }
  return request;
}

base::Status OpenVerity(const VerityOpen& request) {
  char roothash[kRootHashBytes];
  if (!HexToBytes(request.roothash, roothash, sizeof(roothash))) {
    return base::InvalidArgument("the root hash must be 64 lower-case hex digits");
  }
  crypt_device* raw = nullptr;
  int r = crypt_init_data_device(&raw, request.hash_device.c_str(), request.data_device.c_str());
  if (r < 0) {
    return base::Internal(
        CryptError("cannot use " + request.data_device + " with hash device " + request.hash_device, r));
  }
  CryptDevice cd(raw);
  // The superblock on the hash device gives the block sizes, salt and hash algorithm.
  crypt_params_verity params{};
  r = crypt_load(cd.get(), CRYPT_VERITY, &params);
  if (r < 0) {
    return base::Internal(CryptError("no valid verity superblock on " + request.hash_device, r));
  }
  r = crypt_activate_by_volume_key(cd.get(), request.name.c_str(), roothash, sizeof(roothash), CRYPT_ACTIVATE_READONLY);
  if (r < 0) {
    return base::Internal(CryptError("cannot activate dm-verity mapping " + request.name, r));
  }
  return base::Status::Ok();
}

base::Status CheckVerityReadable(const std::string& name) {
  std::string path = std::string(crypt_get_dir()) + "/" + name;
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return base::SystemError("open " + path);
  }
  char block[4096];
  ssize_t n = ::pread(fd.get(), block, sizeof(block), 0);
  int err = errno;
  fd.Reset();
  if (n == static_cast<ssize_t>(sizeof(block))) {
    return base::Status::Ok();
  }
  // The root must not stay reachable through a mapping that failed its check.
  int removed = crypt_deactivate(nullptr, name.c_str());
  std::string why = n < 0 ? std::strerror(err) : "short read of " + std::to_string(n) + " bytes";
  return base::FailedPrecondition("reading the first block of " + path + " failed (" + why +
                                  "): the data does not match the root hash" +
                                  (removed < 0 ? "; removing the mapping failed too" : ""));
}

base::Status ProvisionLuks(const LuksProvision& request, const std::function<void()>& formatted) {
  SecretBytes<kVolumeKeyBytes> key;
  CHRYS_RETURN_IF_ERROR(FillRandom(key.bytes.data(), key.bytes.size()));
  crypt_device* raw = nullptr;
  int r = crypt_init(&raw, request.device.c_str());
  if (r < 0) {
    return base::Internal(CryptError("cannot open " + request.device, r));
  }
  CryptDevice cd(raw);
  // The header's digest of the volume key is a PBKDF2 too: a random 512-bit key needs no stretching.
  crypt_pbkdf_type pbkdf{};
  pbkdf.type = CRYPT_KDF_PBKDF2;
  pbkdf.hash = "sha256";
  pbkdf.iterations = 1000;  // LUKS2's minimum
  pbkdf.flags = CRYPT_PBKDF_NO_BENCHMARK;
  if ((r = crypt_set_pbkdf_type(cd.get(), &pbkdf)) < 0) {
    return base::Internal(CryptError("cannot set the LUKS2 digest parameters", r));
  }
  if ((r = crypt_set_metadata_size(cd.get(), kLuksMetadataBytes, kLuksKeyslotsBytes)) < 0) {
    return base::Internal(CryptError("cannot set the LUKS2 metadata size", r));
  }
  if ((r = crypt_set_data_offset(cd.get(), kLuksDataOffsetSectors)) < 0) {
    return base::Internal(CryptError("cannot set the LUKS2 data offset", r));
  }
  crypt_params_luks2 params{};
  params.sector_size = 4096;
  params.label = request.label.c_str();
  r = crypt_format(cd.get(), CRYPT_LUKS2, "aes", "xts-plain64", nullptr, key.bytes.data(), key.bytes.size(), &params);
  if (r < 0) {
    return base::Internal(CryptError("LUKS2 format of " + request.device + " failed", r));
  }
  if (formatted) {
    formatted();
  }
  r = crypt_activate_by_volume_key(cd.get(), request.name.c_str(), key.bytes.data(), key.bytes.size(), 0);
  if (r < 0) {
    return base::Internal(
        CryptError("cannot open the new LUKS2 volume on " + request.device + " as " + request.name, r));
  }
  return base::Status::Ok();
}

}  // namespace chrys::guest::hal
