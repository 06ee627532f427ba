// CAF 0.17's work-stealing scheduler with one change: a job enqueued from a foreign thread (the
// cluster transport's I/O thread, a timer, a detached actor, node::ask) wakes its sleeping worker
// after releasing the worker's wait lock, not while holding it. CAF signals the condition
// variable under the lock: the woken worker must then take that lock before it can run, so on a
// loaded machine it is often scheduled while the enqueuing thread still holds it, blocks on the
// mutex, and waits until that thread is scheduled again to release it (a futex wait and wake
// more per hand-off; a trace of the Raft bench showed a follower's worker blocked 0.42 ms so).
// Signalling after the unlock is the usual pattern and loses no wake-up: the worker sets
// `sleeping` and checks its queue under the lock and waits on the condition variable, which
// releases the lock atomically; the job is appended before the lock is taken here, so either the
// worker sees it before it sleeps, or it is already waiting when the signal comes.
#include "caf_scheduler.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/policy/work_stealing.hpp>
#include <caf/scheduler/coordinator.hpp>

#include <memory>
#include <mutex>

namespace af::detail {

namespace {

class work_stealing : public caf::policy::work_stealing {
public:
  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    auto& data = d(self);
    data.queue.append(job);
    bool wake = false;
    {
      std::lock_guard<std::mutex> guard{data.waitdata.lock};
      wake = data.waitdata.sleeping;
    }
    if (wake) data.waitdata.cv.notify_one();
  }
};

using coordinator = caf::scheduler::coordinator<work_stealing>;

} // namespace

void use_work_stealing_scheduler(caf::actor_system_config& cfg) {
  cfg.module_factories.push_back([](caf::actor_system& sys) -> caf::actor_system::module* {
    return std::make_unique<coordinator>(sys).release();
  });
}

bool uses_work_stealing_scheduler(caf::actor_system& sys) {
  return dynamic_cast<coordinator*>(&sys.scheduler()) != nullptr;
}

} // namespace af::detail
