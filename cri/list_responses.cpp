#include "cri/list_responses.h"

#include <google/protobuf/io/coded_stream.h>

#include <array>
#include <cstdint>
#include <memory>

#include "cri/cri_util.h"

namespace chrys::cri {
namespace {

// Both responses have one field, `repeated <Entry> <name> = 1`. Each element goes on the wire as its key (field 1,
// length-delimited: 0x0a), its length as a varint, then the entry's own encoding.
std::string ConcatenateRepeatedField1(const std::vector<const std::string*>& entries) {
  constexpr uint8_t kField1Key = (1 << 3) | 2;
  using google::protobuf::io::CodedOutputStream;
  size_t total = 0;
  for (const std::string* entry : entries) {
    total += 1 + CodedOutputStream::VarintSize32(static_cast<uint32_t>(entry->size())) + entry->size();
  }
  std::string out;
  out.reserve(total);
  std::array<uint8_t, 5> varint{};
  for (const std::string* entry : entries) {
    out.push_back(static_cast<char>(kField1Key));
    uint8_t* end = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(entry->size()), varint.data());
    out.append(reinterpret_cast<const char*>(varint.data()), static_cast<size_t>(end - varint.data()));
    out.append(*entry);
  }
  return out;
}

// The records that pass `filter`, each as its cached entry (encoded as an `Entry` filled by `fill` on first use).
template <typename Entry, typename Record, typename Filter>
std::string EncodeMatching(const std::vector<std::shared_ptr<const Record>>& records, const Filter& filter,
                           bool (*matches)(const Record&, const Filter&), void (*fill)(const Record&, Entry*)) {
  std::vector<const std::string*> entries;
  entries.reserve(records.size());
  for (const auto& record : records) {
    if (matches(*record, filter)) {
      entries.push_back(&record->list_entry.Get([&] {
        Entry listed;
        fill(*record, &listed);
        return listed.SerializeAsString();
      }));
    }
  }
  return ConcatenateRepeatedField1(entries);
}

}  // namespace

v1::ContainerState ToCriState(ContainerState state) {
  switch (state) {
    case ContainerState::kCreated:
      return v1::CONTAINER_CREATED;
    case ContainerState::kRunning:
      return v1::CONTAINER_RUNNING;
    case ContainerState::kExited:
      return v1::CONTAINER_EXITED;
    case ContainerState::kUnknown:
      return v1::CONTAINER_UNKNOWN;
  }
  return v1::CONTAINER_UNKNOWN;
}

v1::PodSandboxState ToCriState(PodState state) {
  return state == PodState::kReady ? v1::SANDBOX_READY : v1::SANDBOX_NOTREADY;
}

void FillListedContainer(const ContainerRecord& record, v1::Container* out) {
  out->set_id(record.id);
  out->set_pod_sandbox_id(record.sandbox_id);
  *out->mutable_metadata() = record.config.metadata();
  *out->mutable_image() = record.config.image();
  out->set_image_ref(record.image_id);
  out->set_image_id(record.image_id);
  out->set_state(ToCriState(record.state));
  out->set_created_at(record.created_at);
  *out->mutable_labels() = record.config.labels();
  *out->mutable_annotations() = record.config.annotations();
}

void FillListedPod(const PodRecord& record, v1::PodSandbox* out) {
  out->set_id(record.id);
  *out->mutable_metadata() = record.config.metadata();
  out->set_state(ToCriState(record.state));
  out->set_created_at(record.created_at);
  *out->mutable_labels() = record.config.labels();
  *out->mutable_annotations() = record.config.annotations();
  out->set_runtime_handler(record.handler);
}

bool MatchesContainerFilter(const ContainerRecord& record, const v1::ContainerFilter& filter) {
  if (!filter.id().empty() && record.id.rfind(filter.id(), 0) != 0) {
    return false;
  }
  if (!filter.pod_sandbox_id().empty() && record.sandbox_id.rfind(filter.pod_sandbox_id(), 0) != 0) {
    return false;
  }
  if (filter.has_state() && filter.state().state() != ToCriState(record.state)) {
    return false;
  }
  return MatchesSelector(record.config.labels(), filter.label_selector());
}

bool MatchesPodFilter(const PodRecord& record, const v1::PodSandboxFilter& filter) {
  if (!filter.id().empty() && record.id.rfind(filter.id(), 0) != 0) {
    return false;
  }
  if (filter.has_state() && filter.state().state() != ToCriState(record.state)) {
    return false;
  }
  return MatchesSelector(record.config.labels(), filter.label_selector());
}

std::string EncodeListContainersResponse(const std::vector<PodStore::ContainerPtr>& records,
                                         const v1::ContainerFilter& filter) {
  return EncodeMatching<v1::Container>(records, filter, MatchesContainerFilter, FillListedContainer);
}

std::string EncodeListPodSandboxResponse(const std::vector<PodStore::PodPtr>& records,
                                         const v1::PodSandboxFilter& filter) {
  return EncodeMatching<v1::PodSandbox>(records, filter, MatchesPodFilter, FillListedPod);
}

}  // namespace chrys::cri
