// Private: a thread of its own for a store agent's blocking backend calls, so the agent itself
// runs on the scheduler. Messages to a detached agent wake its thread one by one (64 appenders:
// 64 wake-ups between two commits); an agent on the scheduler takes them from the workers'
// queues, and only each backend call costs a hand-off to this thread and one message back.
#pragma once

#include "af/agent.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>

namespace af::store::detail {

class backend_thread {
public:
  /// What runs back on the agent once a job is done.
  using completion = std::function<void(context&)>;
  /// Runs on the thread; returns its completion.
  using job = std::function<completion()>;

  /// `notify` runs on the thread when completions are waiting and the agent has not been told
  /// yet (it tells the agent a message whose handler calls run_done).
  backend_thread(std::string name, std::function<void()> notify)
      : notify_(std::move(notify)), thread_([this, n = std::move(name)] { run(n); }) {}

  backend_thread(const backend_thread&) = delete;
  backend_thread& operator=(const backend_thread&) = delete;

  /// Runs the jobs already posted, then ends the thread; their completions wait for run_done.
  ~backend_thread() { stop(); }

  /// Queues `j`; jobs run one at a time, in the order posted.
  void post(job j) {
    {
      std::lock_guard g{m_};
      jobs_.push_back(std::move(j));
    }
    cv_.notify_one();
  }

  /// Runs, on the agent, the completions of the jobs done so far, in order.
  void run_done(context& ctx) {
    std::vector<completion> done;
    {
      std::lock_guard g{m_};
      done.swap(done_);
      told_ = false;
    }
    for (auto& c : done)
      c(ctx);
  }

  /// Finishes the queued jobs and joins the thread (idempotent).
  void stop() {
    {
      std::lock_guard g{m_};
      stopping_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

private:
  void run(const std::string& name) {
    (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    std::unique_lock lk{m_};
    for (;;) {
      cv_.wait(lk, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return; // stopping, nothing left
      auto j = std::move(jobs_.front());
      jobs_.pop_front();
      lk.unlock();
      auto c = j();
      lk.lock();
      done_.push_back(std::move(c));
      if (told_ || stopping_) continue; // a stopping agent runs run_done itself
      told_ = true;
      lk.unlock();
      notify_();
      lk.lock();
    }
  }

  std::function<void()> notify_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<job> jobs_;
  std::vector<completion> done_;
  bool told_ = false;
  bool stopping_ = false;
  std::thread thread_; // last: started once everything above exists
};

} // namespace af::store::detail
