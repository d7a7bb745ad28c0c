// A stand-in for libsystemd.so.0 in the guest's tools image: every function crun imports, each failing with
// ENOSYS. The guest runs no systemd: crun's systemd cgroup manager, journald logging and sd_notify are never
// selected there (the agent runs crun with cgroupfs and a log file). The real library would make the dynamic
// loader map six more libraries (libgcrypt, liblzma, libzstd, liblz4, libgpg-error) on every crun run, which
// under emulation costs tens of milliseconds per container start and exec.
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#define CHRYS_EXPORT __attribute__((visibility("default")))

typedef struct sd_bus sd_bus;
typedef struct sd_bus_message sd_bus_message;
typedef struct sd_bus_error sd_bus_error;
typedef struct sd_bus_slot sd_bus_slot;

CHRYS_EXPORT int sd_bus_default_system(sd_bus** bus) {
  (void)bus;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_default_user(sd_bus** bus) {
  (void)bus;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_call(sd_bus* bus, sd_bus_message* m, uint64_t usec, sd_bus_error* error,
                             sd_bus_message** reply) {
  (void)bus, (void)m, (void)usec, (void)error, (void)reply;
  return -ENOSYS;
}

CHRYS_EXPORT void sd_bus_error_free(sd_bus_error* error) {
  (void)error;
}

CHRYS_EXPORT int sd_bus_error_get_errno(const sd_bus_error* error) {
  (void)error;
  return ENOSYS;
}

CHRYS_EXPORT int sd_bus_match_signal_async(sd_bus* bus, sd_bus_slot** slot, const char* sender, const char* path,
                                           const char* interface, const char* member, void* callback,
                                           void* install_callback, void* userdata) {
  (void)bus, (void)slot, (void)sender, (void)path, (void)interface, (void)member, (void)callback;
  (void)install_callback, (void)userdata;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_message_append(sd_bus_message* m, const char* types, ...) {
  (void)m, (void)types;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_message_append_strv(sd_bus_message* m, char** l) {
  (void)m, (void)l;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_message_open_container(sd_bus_message* m, char type, const char* contents) {
  (void)m, (void)type, (void)contents;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_message_close_container(sd_bus_message* m) {
  (void)m;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_message_new_method_call(sd_bus* bus, sd_bus_message** m, const char* destination,
                                                const char* path, const char* interface, const char* member) {
  (void)bus, (void)m, (void)destination, (void)path, (void)interface, (void)member;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_bus_message_read(sd_bus_message* m, const char* types, ...) {
  (void)m, (void)types;
  return -ENOSYS;
}

CHRYS_EXPORT sd_bus_message* sd_bus_message_unref(sd_bus_message* m) {
  (void)m;
  return NULL;
}

CHRYS_EXPORT int sd_bus_process(sd_bus* bus, sd_bus_message** r) {
  (void)bus, (void)r;
  return -ENOSYS;
}

CHRYS_EXPORT sd_bus* sd_bus_unref(sd_bus* bus) {
  (void)bus;
  return NULL;
}

CHRYS_EXPORT int sd_bus_wait(sd_bus* bus, uint64_t timeout_usec) {
  (void)bus, (void)timeout_usec;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_journal_send_with_location(const char* file, const char* line, const char* func, const char* format,
                                               ...) {
  (void)file, (void)line, (void)func, (void)format;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_notify(int unset_environment, const char* state) {
  (void)unset_environment, (void)state;
  return -ENOSYS;
}

CHRYS_EXPORT int sd_notify_barrier(int unset_environment, uint64_t timeout) {
  (void)unset_environment, (void)timeout;
  return -ENOSYS;
}
