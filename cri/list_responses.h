// ListContainers' and ListPodSandbox's answers as bytes: each record's entry is encoded once (records are immutable)
// and a list is the concatenation of the matching entries, so kubelet's frequent relists of many pods and
// containers cost a copy, not a protobuf message per entry built, serialised and freed on every call.
#pragma once

#include <string>
#include <vector>

#include "cri/pod_store.h"
#include "cri/proto/api.pb.h"

namespace chrys::cri {

v1::ContainerState ToCriState(ContainerState state);
v1::PodSandboxState ToCriState(PodState state);

// The container as ListContainers shows it.
void FillListedContainer(const ContainerRecord& record, v1::Container* out);
// The pod as ListPodSandbox shows it.
void FillListedPod(const PodRecord& record, v1::PodSandbox* out);

// CRI filter semantics: ids match as prefixes (crictl passes truncated ids), state exactly, and every label of the
// selector.
bool MatchesContainerFilter(const ContainerRecord& record, const v1::ContainerFilter& filter);
bool MatchesPodFilter(const PodRecord& record, const v1::PodSandboxFilter& filter);

// The wire encoding of the ListContainersResponse / ListPodSandboxResponse that holds, in order, the records that
// pass `filter`.
std::string EncodeListContainersResponse(const std::vector<PodStore::ContainerPtr>& records,
                                         const v1::ContainerFilter& filter);
std::string EncodeListPodSandboxResponse(const std::vector<PodStore::PodPtr>& records,
                                         const v1::PodSandboxFilter& filter);

}  // namespace chrys::cri
