#include "runtime/confidential/ovmf_vars.h"

#include <sys/stat.h>

#include "base/file_util.h"

namespace chrys::runtime::confidential {

base::Status EnsurePerVmOvmfVars(const std::string& template_path, const std::string& dest) {
  struct stat tmpl {};
  if (::stat(template_path.c_str(), &tmpl) != 0) {
    return base::SystemError("OVMF vars template " + template_path + " (install the ovmf package)");
  }
  if (tmpl.st_size <= 0 || tmpl.st_size > (64 << 20)) {
    return base::FailedPrecondition("OVMF vars template " + template_path + " has an implausible size");
  }
  struct stat existing {};
  if (::stat(dest.c_str(), &existing) == 0) {
    if (existing.st_size == tmpl.st_size) {
      return base::Status::Ok();
    }
    return base::FailedPrecondition("existing OVMF vars " + dest + " does not match the template size; remove it");
  }
  CHRYS_ASSIGN_OR_RETURN(std::string data, base::ReadFile(template_path, 64 << 20));
  return base::WriteFileAtomic(dest, data, 0600);
}

}  // namespace chrys::runtime::confidential
