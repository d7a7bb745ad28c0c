// ListContainers' answer as bytes: each container's entry is encoded once per record (records are immutable) and a
// list is their concatenation, so kubelet's frequent relists of many containers cost a copy, not a protobuf
// message per container built, serialised and freed on every call.
#pragma once

#include <string>
#include <vector>

#include "cri/pod_store.h"
#include "cri/proto/api.pb.h"

namespace chrys::cri {

v1::ContainerState ToCriState(ContainerState state);

// The container as ListContainers shows it.
void FillListedContainer(const ContainerRecord& record, v1::Container* out);

// CRI ContainerFilter semantics: id and pod_sandbox_id match as prefixes (crictl passes truncated ids), state
// exactly, and every label of the selector.
bool MatchesContainerFilter(const ContainerRecord& record, const v1::ContainerFilter& filter);

// The wire encoding of the ListContainersResponse that holds, in order, the records that pass `filter`.
std::string EncodeListContainersResponse(const std::vector<PodStore::ContainerPtr>& records,
                                         const v1::ContainerFilter& filter);

}  // namespace chrys::cri
