// ListContainers' and ListPodSandbox's byte answers: the same messages the protobuf API would build, the filters,
// and the cached entries.
#include "cri/list_responses.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace chrys::cri {
namespace {

PodStore::ContainerPtr Record(const std::string& id, const std::string& sandbox, ContainerState state,
                              const std::string& app) {
  auto r = std::make_shared<ContainerRecord>();
  r->id = id;
  r->sandbox_id = sandbox;
  r->state = state;
  r->config.mutable_metadata()->set_name("c-" + id);
  r->config.mutable_metadata()->set_attempt(2);
  r->config.mutable_image()->set_image("localhost/demo:latest");
  (*r->config.mutable_labels())["app"] = app;
  (*r->config.mutable_annotations())["io.kubernetes.container.hash"] = "1f2e3d";
  r->image_id = "sha256:" + std::string(64, 'e');
  r->created_at = 1700000000123456789;
  return r;
}

v1::ListContainersResponse Decode(const std::string& bytes) {
  v1::ListContainersResponse parsed;
  EXPECT_TRUE(parsed.ParseFromString(bytes));
  return parsed;
}

std::vector<std::string> Ids(const v1::ListContainersResponse& response) {
  std::vector<std::string> ids;
  for (const auto& c : response.containers()) {
    ids.push_back(c.id());
  }
  return ids;
}

class ContainerListTest : public ::testing::Test {
 protected:
  std::vector<PodStore::ContainerPtr> records_ = {
      Record("aaa111", "pod1", ContainerState::kRunning, "web"),
      Record("aab222", "pod1", ContainerState::kExited, "db"),
      Record("bbb333", "pod2", ContainerState::kRunning, "web"),
      // An entry over 127 bytes long needs a two-byte length varint; make one far longer.
      Record(std::string(300, 'c'), "pod2", ContainerState::kCreated, std::string(200, 'x')),
  };
};

TEST_F(ContainerListTest, BytesAreTheMessageTheProtobufApiWouldBuild) {
  v1::ListContainersResponse expected;
  for (const auto& r : records_) {
    FillListedContainer(*r, expected.add_containers());
  }
  std::string encoded = EncodeListContainersResponse(records_, v1::ContainerFilter());
  v1::ListContainersResponse decoded = Decode(encoded);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(decoded, expected)) << decoded.DebugString();
  EXPECT_EQ(decoded.containers(0).state(), v1::CONTAINER_RUNNING);
  EXPECT_EQ(decoded.containers(0).image_ref(), records_[0]->image_id);
  EXPECT_EQ(decoded.containers(0).metadata().attempt(), 2u);
  // Asked again (now from the cached entries): the same bytes.
  EXPECT_EQ(EncodeListContainersResponse(records_, v1::ContainerFilter()), encoded);
  EXPECT_TRUE(EncodeListContainersResponse({}, v1::ContainerFilter()).empty());
}

TEST_F(ContainerListTest, FiltersMatchPrefixesStateAndLabels) {
  v1::ContainerFilter by_id;
  by_id.set_id("aa");
  EXPECT_EQ(Ids(Decode(EncodeListContainersResponse(records_, by_id))), (std::vector<std::string>{"aaa111", "aab222"}));

  v1::ContainerFilter by_pod;
  by_pod.set_pod_sandbox_id("pod2");
  EXPECT_EQ(Decode(EncodeListContainersResponse(records_, by_pod)).containers_size(), 2);

  v1::ContainerFilter running_web;
  running_web.mutable_state()->set_state(v1::CONTAINER_RUNNING);
  (*running_web.mutable_label_selector())["app"] = "web";
  EXPECT_EQ(Ids(Decode(EncodeListContainersResponse(records_, running_web))),
            (std::vector<std::string>{"aaa111", "bbb333"}));

  v1::ContainerFilter exited_in_pod2;
  exited_in_pod2.set_pod_sandbox_id("pod2");
  exited_in_pod2.mutable_state()->set_state(v1::CONTAINER_EXITED);
  EXPECT_TRUE(EncodeListContainersResponse(records_, exited_in_pod2).empty());

  v1::ContainerFilter no_such_label;
  (*no_such_label.mutable_label_selector())["tier"] = "web";
  EXPECT_TRUE(EncodeListContainersResponse(records_, no_such_label).empty());
}

TEST_F(ContainerListTest, AChangedCopyIsListedAsChangedAndTheOriginalKeepsItsEntry) {
  std::string before = EncodeListContainersResponse({records_[0]}, v1::ContainerFilter());
  // How the store changes a record: copy it, change the copy, swap the pointer.
  auto changed = std::make_shared<ContainerRecord>(*records_[0]);
  changed->state = ContainerState::kExited;
  v1::ListContainersResponse listed = Decode(EncodeListContainersResponse({changed}, v1::ContainerFilter()));
  ASSERT_EQ(listed.containers_size(), 1);
  EXPECT_EQ(listed.containers(0).state(), v1::CONTAINER_EXITED);
  EXPECT_EQ(EncodeListContainersResponse({records_[0]}, v1::ContainerFilter()), before);

  // Assigning over a record that already has an entry drops that entry too.
  ContainerRecord assigned = *records_[1];
  assigned.list_entry.Get([] { return std::string("stale"); });
  assigned = *changed;
  EXPECT_NE(assigned.list_entry.Get([] { return std::string("fresh"); }), "stale");
}

PodStore::PodPtr Pod(const std::string& id, PodState state, const std::string& app) {
  auto p = std::make_shared<PodRecord>();
  p->id = id;
  p->state = state;
  p->handler = "chrysalis";
  p->created_at = 1700000000987654321;
  p->config.mutable_metadata()->set_name("pod-" + id);
  p->config.mutable_metadata()->set_namespace_("default");
  p->config.mutable_metadata()->set_uid("uid-" + id);
  (*p->config.mutable_labels())["app"] = app;
  (*p->config.mutable_annotations())["kubernetes.io/config.source"] = "api";
  return p;
}

TEST(PodListTest, BytesAreTheMessageTheProtobufApiWouldBuildAndFiltersApply) {
  std::vector<PodStore::PodPtr> pods = {Pod("p1aa", PodState::kReady, "web"), Pod("p1bb", PodState::kNotReady, "web"),
                                        Pod("p2cc", PodState::kReady, "db"), Pod("p3dd", PodState::kCreating, "web")};
  v1::ListPodSandboxResponse expected;
  for (const auto& p : pods) {
    FillListedPod(*p, expected.add_items());
  }
  v1::ListPodSandboxResponse decoded;
  ASSERT_TRUE(decoded.ParseFromString(EncodeListPodSandboxResponse(pods, v1::PodSandboxFilter())));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(decoded, expected)) << decoded.DebugString();
  EXPECT_EQ(decoded.items(0).runtime_handler(), "chrysalis");
  EXPECT_EQ(decoded.items(0).state(), v1::SANDBOX_READY);
  EXPECT_EQ(decoded.items(3).state(), v1::SANDBOX_NOTREADY) << "a pod still being created is not ready";

  auto ids = [&](const v1::PodSandboxFilter& filter) {
    v1::ListPodSandboxResponse r;
    EXPECT_TRUE(r.ParseFromString(EncodeListPodSandboxResponse(pods, filter)));
    std::vector<std::string> out;
    for (const auto& item : r.items()) {
      out.push_back(item.id());
    }
    return out;
  };
  v1::PodSandboxFilter by_prefix;
  by_prefix.set_id("p1");
  EXPECT_EQ(ids(by_prefix), (std::vector<std::string>{"p1aa", "p1bb"}));
  v1::PodSandboxFilter ready_web;
  ready_web.mutable_state()->set_state(v1::SANDBOX_READY);
  (*ready_web.mutable_label_selector())["app"] = "web";
  EXPECT_EQ(ids(ready_web), (std::vector<std::string>{"p1aa"}));
  v1::PodSandboxFilter not_ready;
  not_ready.mutable_state()->set_state(v1::SANDBOX_NOTREADY);
  EXPECT_EQ(ids(not_ready), (std::vector<std::string>{"p1bb", "p3dd"}));

  // A pod changed the way the store changes one (copy, change, swap) lists with its new state.
  auto stopped = std::make_shared<PodRecord>(*pods[0]);
  stopped->state = PodState::kNotReady;
  v1::ListPodSandboxResponse after;
  ASSERT_TRUE(after.ParseFromString(EncodeListPodSandboxResponse({stopped}, v1::PodSandboxFilter())));
  ASSERT_EQ(after.items_size(), 1);
  EXPECT_EQ(after.items(0).state(), v1::SANDBOX_NOTREADY);
}

}  // namespace
}  // namespace chrys::cri
