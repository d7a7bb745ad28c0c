// Proves our cri/proto/api.proto is the same wire contract as the upstream CRI v1 reference: every service, RPC,
// message, enum, field name, number, type and label compared on the compiled descriptors.
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "base/file_util.h"
#include "base/subprocess.h"
#include "cri/proto/api.pb.h"

namespace chrys::cri {
namespace {

namespace pb = google::protobuf;

// Drops what does not reach the wire: file name, options (debug_redact, go_package), source info.
void Normalize(pb::FileDescriptorProto& file) {
  file.clear_name();
  file.clear_options();
  file.clear_source_code_info();
  std::function<void(pb::DescriptorProto&)> strip = [&](pb::DescriptorProto& msg) {
    msg.clear_options();
    for (auto& field : *msg.mutable_field()) {
      field.clear_options();
      field.clear_json_name();
    }
    for (auto& nested : *msg.mutable_nested_type()) {
      strip(nested);
    }
    for (auto& e : *msg.mutable_enum_type()) {
      e.clear_options();
    }
  };
  for (auto& msg : *file.mutable_message_type()) {
    strip(msg);
  }
  for (auto& e : *file.mutable_enum_type()) {
    e.clear_options();
  }
  for (auto& svc : *file.mutable_service()) {
    for (auto& m : *svc.mutable_method()) {
      m.clear_options();
    }
  }
}

TEST(ProtoContractTest, SameWireContractAsReference) {
  std::string reference = std::string(CHRYS_SHARED_DIR) + "/specs/cri-api-v1.proto";
  if (!std::filesystem::exists(reference)) {
    GTEST_SKIP() << "reference " << reference << " not present beside the checkout";
  }
  char tmpl[] = "/tmp/chrys-proto-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  auto text = base::ReadFile(reference);
  ASSERT_TRUE(text.ok());
  // Debian's protoc 3.21 predates the debug_redact option; it has no effect on the wire.
  std::string stripped = std::regex_replace(*text, std::regex(R"(\s*\[debug_redact = true\])"), "");
  ASSERT_TRUE(base::WriteFileAtomic(dir + "/api.proto", stripped).ok());
  base::CommandSpec spec;
  spec.argv = {CHRYS_PROTOC, "--proto_path=" + dir, "--descriptor_set_out=" + dir + "/ref.pb", dir + "/api.proto"};
  auto ran = base::RunCommand(spec);
  ASSERT_TRUE(ran.ok()) << ran.error().message();
  ASSERT_TRUE(ran->success()) << ran->stderr_data;

  pb::FileDescriptorSet set;
  {
    std::ifstream in(dir + "/ref.pb", std::ios::binary);
    ASSERT_TRUE(set.ParseFromIstream(&in));
  }
  std::filesystem::remove_all(dir);
  ASSERT_EQ(set.file_size(), 1);
  pb::FileDescriptorProto theirs = set.file(0);
  pb::FileDescriptorProto ours;
  ::runtime::v1::VersionRequest::descriptor()->file()->CopyTo(&ours);
  EXPECT_EQ(ours.package(), "runtime.v1");
  Normalize(theirs);
  Normalize(ours);

  ASSERT_EQ(ours.message_type_size(), theirs.message_type_size());
  ASSERT_EQ(ours.service_size(), 2);
  std::string diff;
  pb::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(theirs, ours)) << diff;
}

}  // namespace
}  // namespace chrys::cri
