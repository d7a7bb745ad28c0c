// ListContainers' and ListPodSandbox's answers as bytes: each record's entry is encoded once (records are immutable)
// and a list is the concatenation of the matching entries, so kubelet's frequent relists of many pods and
// containers cost a copy, not a protobuf message per entry built, serialised and freed on every call.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cri/pod_store.h"
#include "cri/proto/api.grpc.pb.h"

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

// Serves a raw callback unary call: parses the request as `Request` and replies with the bytes `encode(request)`
// returns (INVALID_ARGUMENT, naming the message, when the request does not parse).
template <typename Request, typename Encode>
grpc::ServerUnaryReactor* ReplyWithEncoded(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes,
                                           grpc::ByteBuffer* response_bytes, Encode&& encode) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Request request;
  grpc::ByteBuffer copy(*request_bytes);  // shares the slices; Deserialize consumes its argument
  if (grpc::Status parsed = grpc::SerializationTraits<Request>::Deserialize(&copy, &request); !parsed.ok()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 Request::descriptor()->name() + " does not parse: " + parsed.error_message()));
    return reactor;
  }
  grpc::Slice slice(std::forward<Encode>(encode)(request));  // copies: one memcpy, negligible beside the call
  *response_bytes = grpc::ByteBuffer(&slice, 1);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace chrys::cri
