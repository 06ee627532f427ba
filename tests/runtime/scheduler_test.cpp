// The node's work-stealing scheduler (runtime/src/caf_scheduler.cpp): CAF's, except that a job
// from a foreign thread signals a sleeping worker after releasing its lock. No wake-up may be lost.
#include "caf_scheduler.hpp"

#include "af/node.hpp"
#include "node_core.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// Counts what an actor received; the test thread waits for a count with a deadline.
struct tally {
  std::mutex mtx;
  std::condition_variable cv;
  long n = 0;
  void add() {
    {
      std::lock_guard g{mtx};
      ++n;
    }
    cv.notify_all();
  }
  bool wait_for(long want, std::chrono::milliseconds limit) {
    std::unique_lock g{mtx};
    return cv.wait_for(g, limit, [&] { return n >= want; });
  }
};

caf::behavior counting(caf::event_based_actor*, tally* t) {
  return {[t](int) { t->add(); }};
}

/// Workers that sleep on their signal after two polls and would otherwise only look again after
/// 100 s: a lost wake-up shows as a timeout, not as a slow test.
void sleepy(caf::actor_system_config& cfg) {
  cfg.set("scheduler.max-threads", static_cast<std::size_t>(2));
  cfg.set("work-stealing.aggressive-poll-attempts", static_cast<std::size_t>(1));
  cfg.set("work-stealing.moderate-poll-attempts", static_cast<std::size_t>(1));
  cfg.set("work-stealing.moderate-sleep-duration", caf::timespan{0});
  cfg.set("work-stealing.relaxed-sleep-duration",
          caf::timespan{std::chrono::duration_cast<caf::timespan>(100s)});
  af::detail::use_work_stealing_scheduler(cfg);
}

} // namespace

TEST_CASE("scheduler: a node runs on the work-stealing scheduler of caf_scheduler.cpp",
          "[scheduler]") {
  af::node::options opt;
  auto n = af::node::start(std::move(opt));
  REQUIRE(n.has_value());
  REQUIRE((*n)->core().sys != nullptr);
  CHECK(af::detail::uses_work_stealing_scheduler(*(*n)->core().sys));
  (*n)->shutdown();

  caf::actor_system_config cfg;
  sleepy(cfg);
  caf::actor_system sys{cfg};
  CHECK(af::detail::uses_work_stealing_scheduler(sys));
  caf::actor_system_config plain;
  caf::actor_system other{plain};
  CHECK_FALSE(af::detail::uses_work_stealing_scheduler(other));
}

TEST_CASE("scheduler: a message from a foreign thread wakes a sleeping worker", "[scheduler]") {
  caf::actor_system_config cfg;
  sleepy(cfg);
  caf::actor_system sys{cfg};
  tally t;
  auto a = sys.spawn(counting, &t);
  // Each send comes after a pause in which both workers go to sleep on their signal.
  for (int i = 1; i <= 50; ++i) {
    std::this_thread::sleep_for(2ms);
    caf::anon_send(a, i);
    REQUIRE(t.wait_for(i, 5s));
  }
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

TEST_CASE("scheduler: foreign threads sending at once lose no message and no wake-up",
          "[scheduler]") {
  caf::actor_system_config cfg;
  sleepy(cfg);
  caf::actor_system sys{cfg};
  tally t;
  std::vector<caf::actor> actors;
  for (int i = 0; i < 8; ++i)
    actors.push_back(sys.spawn(counting, &t));
  constexpr int threads = 4, per_thread = 5000;
  std::vector<std::thread> senders;
  for (int s = 0; s < threads; ++s)
    senders.emplace_back([&, s] {
      for (int i = 0; i < per_thread; ++i) {
        caf::anon_send(actors[static_cast<std::size_t>(i + s) % actors.size()], i);
        if (i % 500 == 0) std::this_thread::sleep_for(1ms); // let the workers fall asleep
      }
    });
  for (auto& th : senders)
    th.join();
  CHECK(t.wait_for(long{threads} * per_thread, 20s));
  std::lock_guard g{t.mtx};
  CHECK(t.n == long{threads} * per_thread);
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}
