// The plan hash (af/plan/compile.hpp): SHA-256 over the deterministic Protobuf serialization of
// the IR without positions, sources and hashes, so that only what the plan means is hashed.
#include "af/hash.hpp"
#include "af/plan/compile.hpp"
#include "af/v1/plan.pb.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

namespace af::plan {

namespace {

void strip(v1::BtNode& n) {
  n.clear_pos();
  for (auto& c : *n.mutable_children())
    strip(c);
}

void strip(v1::PlanIR& ir) {
  ir.clear_hash();
  ir.clear_source();
  for (auto& s : *ir.mutable_steps())
    s.clear_pos();
  for (auto& s : *ir.mutable_saga())
    s.clear_pos();
  if (ir.has_fsm())
    for (auto& s : *ir.mutable_fsm()->mutable_states())
      s.clear_pos();
  if (ir.has_root()) strip(*ir.mutable_root());
  for (auto& sub : *ir.mutable_sub_plans())
    strip(sub);
}

} // namespace

std::string plan_hash(const v1::PlanIR& ir) {
  v1::PlanIR copy = ir;
  strip(copy);
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out{&bytes};
    google::protobuf::io::CodedOutputStream coded{&out};
    coded.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&coded);
  }
  auto d = sha256(bytes);
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

std::string plan_hash_hex(const v1::PlanIR& ir) {
  return to_hex(ir.hash().empty() ? plan_hash(ir) : ir.hash());
}

} // namespace af::plan
