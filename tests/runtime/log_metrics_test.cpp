// Tests of the node's structured logging (af/log.hpp) and metrics registry (af/metrics.hpp).
#include "af/log.hpp"
#include "af/metrics.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using nlohmann::json;

struct captured {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  af::logger log;

  explicit captured(af::log_options opts = {}) {
    if (opts.node.empty()) opts.node = "n1";
    if (opts.format == "auto") opts.format = "json";
    log = af::logger{af::make_memory_log_backend(opts, lines)};
  }
  json parsed(std::size_t i) const { return json::parse(lines->at(i)); }
};

// A temporary directory removed with everything in it.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "af-log-metrics-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

std::vector<std::string> read_lines(const std::filesystem::path& p) {
  std::ifstream in{p};
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

// A plain HTTP/1.0 GET over a POSIX socket; returns the whole response (headers and body).
std::string http_get(std::uint16_t port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{};
  tv.tv_sec = 5;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    FAIL("connect to 127.0.0.1:" << port << " failed");
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  std::size_t sent = 0;
  while (sent < req.size()) {
    const auto n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string resp;
  char buf[4096];
  for (;;) {
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return resp;
}

// A socket listening on 127.0.0.1 at an ephemeral port, closed on destruction.
struct listener {
  int fd = -1;
  std::uint16_t port = 0;
  listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 4) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port = ntohs(addr.sin_port);
  }
  ~listener() { ::close(fd); }
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool on_path(const char* program) {
  const std::string cmd = std::string{"command -v "} + program + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

const af::log_context full_context{"4bf92f3577b34da6a3ce929d0e0e4736",
                                   "00f067aa0ba902b7",
                                   "acme",
                                   "plan-7",
                                   "corr-1",
                                   "cause-2",
                                   "msg-3"};

} // namespace

// ------------------------------------------------------------------------------------ logging

TEST_CASE("log levels parse by name", "[log]") {
  CHECK(*af::parse_log_level("trace") == af::log_level::trace);
  CHECK(*af::parse_log_level("debug") == af::log_level::debug);
  CHECK(*af::parse_log_level("INFO") == af::log_level::info);
  CHECK(*af::parse_log_level("warn") == af::log_level::warn);
  CHECK(*af::parse_log_level("warning") == af::log_level::warn);
  CHECK(*af::parse_log_level("error") == af::log_level::error);
  CHECK(*af::parse_log_level("off") == af::log_level::off);
  auto bad = af::parse_log_level("verbose");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == af::errc::validation);
  CHECK(contains(bad.error().message(), "'verbose'"));
  CHECK(af::to_string(af::log_level::warn) == "warn");
}

TEST_CASE("a JSON line carries every field", "[log]") {
  captured c;
  auto lg = c.log.with(full_context);
  lg.info("node_started", "node is up", {{"port", 9464}, {"seeds", {"a:1", "b:2"}}});
  REQUIRE(c.lines->size() == 1);
  const auto& raw = c.lines->front();
  CHECK(raw.rfind("{\"ts\":\"", 0) == 0); // ts comes first
  const json j = c.parsed(0);
  static const std::regex rfc3339{R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)"};
  CHECK(std::regex_match(j.at("ts").get<std::string>(), rfc3339));
  CHECK(j.at("level") == "info");
  CHECK(j.at("event") == "node_started");
  CHECK(j.at("node") == "n1");
  CHECK(j.at("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(j.at("span_id") == "00f067aa0ba902b7");
  CHECK(j.at("tenant") == "acme");
  CHECK(j.at("plan_id") == "plan-7");
  CHECK(j.at("correlation_id") == "corr-1");
  CHECK(j.at("causation_id") == "cause-2");
  CHECK(j.at("message_id") == "msg-3");
  CHECK(j.at("msg") == "node is up");
  CHECK(j.at("port") == 9464);
  CHECK(j.at("seeds") == json::array({"a:1", "b:2"}));
}

TEST_CASE("absent context fields and message are omitted", "[log]") {
  captured c;
  c.log.warn("disk_low");
  REQUIRE(c.lines->size() == 1);
  const json j = c.parsed(0);
  CHECK(j.at("level") == "warn");
  CHECK(j.at("event") == "disk_low");
  CHECK(j.at("node") == "n1");
  for (const char* key : {"trace_id", "span_id", "tenant", "plan_id", "correlation_id",
                          "causation_id", "message_id", "msg"})
    CHECK_FALSE(j.contains(key));
}

TEST_CASE("strings are escaped and invalid UTF-8 is replaced", "[log]") {
  captured c;
  const std::string nasty = "say \"hi\"\nback\\slash\t\x01 bad:\xff\xfe end";
  c.log.error("bad_input", nasty, {{"payload", nasty}, {"note", "caf\xc3\xa9"}});
  REQUIRE(c.lines->size() == 1);
  const auto& raw = c.lines->front();
  CHECK(raw.find('\n') == std::string::npos);
  const json j = c.parsed(0);
  const std::string expected = "say \"hi\"\nback\\slash\t\x01 bad:\xEF\xBF\xBD\xEF\xBF\xBD end";
  CHECK(j.at("msg") == expected);
  CHECK(j.at("payload") == expected);
  CHECK(j.at("note") == "caf\xc3\xa9"); // valid UTF-8 is kept as is
}

TEST_CASE("extra fields never overwrite the core fields", "[log]") {
  captured c;
  c.log.info("e", "m", {{"level", "fake"}, {"node", "other"}, {"k", 1}});
  c.log.info("e", "m", json::array({1, 2}));
  REQUIRE(c.lines->size() == 2);
  const json j = c.parsed(0);
  CHECK(j.at("level") == "info");
  CHECK(j.at("node") == "n1");
  CHECK(j.at("extra.level") == "fake");
  CHECK(j.at("extra.node") == "other");
  CHECK(j.at("k") == 1);
  CHECK(c.parsed(1).at("extra") == json::array({1, 2}));
}

TEST_CASE("lines below the level are dropped", "[log]") {
  af::log_options opts;
  opts.level = af::log_level::warn;
  captured c{opts};
  CHECK_FALSE(c.log.enabled(af::log_level::debug));
  CHECK_FALSE(c.log.enabled(af::log_level::info));
  CHECK(c.log.enabled(af::log_level::warn));
  CHECK_FALSE(c.log.enabled(af::log_level::off));
  c.log.trace("t");
  c.log.debug("d");
  c.log.info("i");
  c.log.warn("w");
  c.log.error("e");
  c.log.log(af::log_level::off, "never");
  REQUIRE(c.lines->size() == 2);
  CHECK(c.parsed(0).at("event") == "w");
  CHECK(c.parsed(1).at("event") == "e");

  SECTION("set_level applies to every logger of the backend") {
    auto child = c.log.with({.tenant = "t"});
    child.set_level(af::log_level::debug);
    CHECK(c.log.level() == af::log_level::debug);
    c.log.debug("d2");
    c.log.trace("t2");
    REQUIRE(c.lines->size() == 3);
    CHECK(c.parsed(2).at("event") == "d2");
  }
  SECTION("off drops everything") {
    c.log.set_level(af::log_level::off);
    c.log.error("e2");
    CHECK(c.lines->size() == 2);
  }
}

TEST_CASE("a default logger drops everything", "[log]") {
  af::logger null;
  CHECK_FALSE(null.enabled(af::log_level::error));
  CHECK(null.level() == af::log_level::off);
  null.error("ignored", "x", {{"k", 1}});
  null.set_level(af::log_level::trace);
  null.flush();
  CHECK(null.with(full_context).context().tenant == "acme");
}

TEST_CASE("the text format is one readable line", "[log]") {
  af::log_options opts;
  opts.format = "text";
  captured c{opts};
  c.log.with({.tenant = "acme"})
      .info("node_started", "node is up", {{"port", 9464}, {"name", "a b"}, {"ok", true}});
  c.log.warn("no_msg", {}, {{"k", "v"}});
  c.log.error("multi", "line1\nline2");
  REQUIRE(c.lines->size() == 3);
  static const std::regex first{
      R"(\d{2}:\d{2}:\d{2}\.\d{3} INFO  node_started  node is up tenant=acme name="a b" ok=true port=9464)"};
  CHECK(std::regex_match(c.lines->at(0), first));
  static const std::regex second{R"(\d{2}:\d{2}:\d{2}\.\d{3} WARN  no_msg k=v)"};
  CHECK(std::regex_match(c.lines->at(1), second));
  CHECK(contains(c.lines->at(2), "ERROR multi  line1\\nline2"));
}

TEST_CASE("with() merges context fields into a new logger", "[log]") {
  captured c;
  auto a = c.log.with({.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736", .tenant = "acme"});
  auto b = a.with({.span_id = "00f067aa0ba902b7", .tenant = "other", .message_id = "m1"});
  a.info("from_a");
  b.info("from_b");
  c.log.info("from_root");
  REQUIRE(c.lines->size() == 3);
  const json ja = c.parsed(0);
  CHECK(ja.at("tenant") == "acme");
  CHECK(ja.at("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK_FALSE(ja.contains("span_id"));
  const json jb = c.parsed(1);
  CHECK(jb.at("tenant") == "other");
  CHECK(jb.at("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(jb.at("span_id") == "00f067aa0ba902b7");
  CHECK(jb.at("message_id") == "m1");
  CHECK_FALSE(c.parsed(2).contains("tenant"));
  CHECK(b.context().tenant == "other");
}

TEST_CASE("concurrent lines are whole", "[log]") {
  captured c;
  constexpr int threads = 4;
  constexpr int per_thread = 250;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&c, t] {
      auto lg = c.log.with({.tenant = "t" + std::to_string(t)});
      for (int i = 0; i < per_thread; ++i)
        lg.info("tick", "concurrent", {{"i", i}});
    });
  for (auto& w : workers)
    w.join();
  REQUIRE(c.lines->size() == threads * per_thread);
  for (std::size_t i = 0; i < c.lines->size(); ++i)
    REQUIRE(c.parsed(i).at("event") == "tick");
}

TEST_CASE("the file sink appends JSON lines", "[log]") {
  temp_dir dir;
  const auto file = dir.path / "logs" / "node.log";
  af::log_options opts;
  opts.file = file.string();
  opts.node = "n2";
  opts.level = af::log_level::debug; // format "auto" writes JSON to a file
  {
    auto backend = af::make_log_backend(opts);
    REQUIRE(backend);
    af::logger lg{*backend, {.tenant = "acme"}};
    lg.info("node_started", "up");
    lg.debug("detail");
    lg.trace("dropped");
    lg.flush();
    const auto lines = read_lines(file);
    REQUIRE(lines.size() == 2);
    CHECK(json::parse(lines[0]).at("event") == "node_started");
    CHECK(json::parse(lines[0]).at("node") == "n2");
    CHECK(json::parse(lines[0]).at("tenant") == "acme");
    CHECK(json::parse(lines[1]).at("level") == "debug");
  }
  {
    auto backend = af::make_log_backend(opts);
    REQUIRE(backend);
    af::logger{*backend}.info("node_restarted");
  }
  const auto lines = read_lines(file);
  REQUIRE(lines.size() == 3);
  CHECK(json::parse(lines[2]).at("event") == "node_restarted");
}

TEST_CASE("log backends report bad options", "[log]") {
  temp_dir dir;
  af::log_options opts;
  opts.file = dir.path.string(); // a directory cannot be opened for appending
  auto r = af::make_log_backend(opts);
  REQUIRE_FALSE(r);
  CHECK(contains(r.error().message(), dir.path.string()));

  af::log_options bad_format;
  bad_format.format = "xml";
  auto f = af::make_log_backend(bad_format);
  REQUIRE_FALSE(f);
  CHECK(f.error().code() == af::errc::validation);
  CHECK(contains(f.error().message(), "xml"));
}

// ------------------------------------------------------------------------------------ metrics

TEST_CASE("the core families are registered with help text", "[metrics]") {
  af::metrics m{"n1", "0.1.0"};
  const auto text = m.serialize_text();
  CHECK(contains(text, "af_node_info{node=\"n1\",version=\"0.1.0\"} 1"));
  CHECK(contains(text, "# TYPE af_agents_active gauge"));
  CHECK(contains(text, "# HELP af_agents_active "));
  CHECK(contains(text, "af_agents_active 0"));
  CHECK(contains(text, "# TYPE af_node_info gauge"));
}

TEST_CASE("core counters, gauges and histograms show up with their labels", "[metrics]") {
  af::metrics m{"n1", "0.1.0"};
  auto handled = m.agent_messages("acme", "echo", af::message_outcome::handled);
  handled.inc();
  handled.inc(2);
  handled.inc(-5); // ignored: counters only go up
  CHECK(handled.value() == 3);
  CHECK(m.agent_messages("acme", "echo", "handled").value() == 3); // same series
  m.agent_messages("acme", "echo", af::message_outcome::failed).inc();

  auto active = m.agents_active();
  active.inc();
  active.inc();
  active.dec();
  CHECK(m.agents_active().value() == 1);

  m.envelope_rejected(af::reject_reason::hash_mismatch).inc();
  auto ask = m.ask_duration("echo");
  ask.observe(0.002);
  ask.observe(20);

  const auto text = m.serialize_text();
  INFO(text);
  CHECK(contains(text, "# HELP af_agent_messages_total "));
  CHECK(contains(text, "# TYPE af_agent_messages_total counter"));
  CHECK(contains(text, "af_agent_messages_total{agent_id=\"echo\",outcome=\"handled\","
                       "tenant=\"acme\"} 3"));
  CHECK(contains(text, "af_agent_messages_total{agent_id=\"echo\",outcome=\"failed\","
                       "tenant=\"acme\"} 1"));
  CHECK(contains(text, "af_agents_active 1"));
  CHECK(contains(text, "af_envelope_rejected_total{reason=\"hash_mismatch\"} 1"));
  CHECK(contains(text, "# TYPE af_agent_ask_duration_seconds histogram"));
  CHECK(contains(text, "af_agent_ask_duration_seconds_count{agent_id=\"echo\"} 2"));
  CHECK(contains(text, "af_agent_ask_duration_seconds_bucket{agent_id=\"echo\",le=\"1e-05\"} 0"));
  CHECK(contains(text, "af_agent_ask_duration_seconds_bucket{agent_id=\"echo\",le=\"0.01\"} 1"));
  CHECK(contains(text, "af_agent_ask_duration_seconds_bucket{agent_id=\"echo\",le=\"10\"} 1"));
  CHECK(contains(text, "af_agent_ask_duration_seconds_bucket{agent_id=\"echo\",le=\"+Inf\"} 2"));
}

TEST_CASE("handles are cheap to share across threads", "[metrics]") {
  af::metrics m{"n1", "0.1.0"};
  auto sent = m.agent_messages("acme", "echo", af::message_outcome::sent);
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t)
    workers.emplace_back([sent] {
      for (int i = 0; i < 1000; ++i)
        sent.inc();
    });
  for (auto& w : workers)
    w.join();
  CHECK(sent.value() == 4000);
}

TEST_CASE("default handles ignore updates", "[metrics]") {
  af::counter_handle c;
  af::gauge_handle g;
  af::histogram_handle h;
  c.inc();
  g.set(3);
  h.observe(1);
  CHECK_FALSE(c);
  CHECK(c.value() == 0);
  CHECK(g.value() == 0);
}

TEST_CASE("generic families are created once and typed", "[metrics]") {
  af::metrics m{"n1", "0.1.0"};
  auto calls = m.counter("af_tool_calls_total", "Tool calls.", {{"tool_id", "http"}});
  REQUIRE(calls);
  calls->inc(4);
  auto again = m.counter("af_tool_calls_total", "ignored help", {{"tool_id", "http"}});
  REQUIRE(again);
  CHECK(again->value() == 4);

  auto depth = m.gauge("af_queue_depth", "Queued items.");
  REQUIRE(depth);
  depth->set(7);

  const auto buckets = af::metrics::exponential_buckets(0.001, 2, 5);
  REQUIRE(buckets.size() == 5);
  CHECK(buckets.back() == Approx(0.016));
  auto plan = m.histogram("af_planner_plan_duration_seconds", "Planning time.", {{"plan_id", "p1"}},
                          buckets);
  REQUIRE(plan);
  plan->observe(0.003);

  const auto text = m.serialize_text();
  CHECK(contains(text, "# HELP af_tool_calls_total Tool calls."));
  CHECK(contains(text, "af_tool_calls_total{tool_id=\"http\"} 4"));
  CHECK(contains(text, "af_queue_depth 7"));
  CHECK(contains(text, "af_planner_plan_duration_seconds_bucket{plan_id=\"p1\",le=\"0.004\"} 1"));

  SECTION("a name keeps its type") {
    auto wrong = m.gauge("af_tool_calls_total", "x");
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().code() == af::errc::validation);
    CHECK(contains(wrong.error().message(), "af_tool_calls_total"));
    CHECK(contains(wrong.error().message(), "counter"));
    CHECK_FALSE(m.counter("af_agents_active", "x")); // core families are in the same cache
  }
  SECTION("invalid names, labels and buckets are errors") {
    auto bad_name = m.counter("af-bad name", "x");
    REQUIRE_FALSE(bad_name);
    CHECK(contains(bad_name.error().message(), "af-bad name"));
    CHECK_FALSE(m.counter("af_ok_total", "x", {{"__reserved", "v"}}));
    CHECK_FALSE(m.histogram("af_h_seconds", "x", {}, {}));
    CHECK_FALSE(m.histogram("af_h2_seconds", "x", {}, {1.0, 0.5}));
    CHECK_FALSE(
        m.histogram("af_planner_plan_duration_seconds", "x", {{"plan_id", "p2"}}, {1.0, 2.0}));
  }
}

TEST_CASE("the exposer serves /metrics over HTTP", "[metrics]") {
  af::metrics m{"n1", "0.1.0"};
  m.agent_messages("acme", "echo", af::message_outcome::handled).inc(5);
  CHECK(m.exposer_port() == 0);
  auto port = m.start_exposer("127.0.0.1:0");
  REQUIRE(port);
  CHECK(*port != 0);
  CHECK(m.exposer_port() == *port);

  const auto resp = http_get(*port, "/metrics");
  INFO(resp);
  CHECK(resp.rfind("HTTP/1.", 0) == 0);
  CHECK(contains(resp, " 200 "));
  CHECK(contains(resp, "af_node_info{node=\"n1\",version=\"0.1.0\"} 1"));
  CHECK(contains(resp, "af_agent_messages_total{agent_id=\"echo\",outcome=\"handled\","
                       "tenant=\"acme\"} 5"));

  auto twice = m.start_exposer("127.0.0.1:0");
  REQUIRE_FALSE(twice);
  CHECK(twice.error().code() == af::errc::conflict);

  m.stop_exposer();
  CHECK(m.exposer_port() == 0);
  m.stop_exposer();
  auto restarted = m.start_exposer("127.0.0.1:0");
  REQUIRE(restarted);
  CHECK(contains(http_get(*restarted, "/metrics"), "af_agents_active 0"));
}

TEST_CASE("a busy or bad address is an error naming it", "[metrics]") {
  af::metrics m{"n1", "0.1.0"};
  SECTION("busy") {
    listener busy;
    const std::string addr = "127.0.0.1:" + std::to_string(busy.port);
    auto r = m.start_exposer(addr);
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == af::errc::conflict);
    CHECK(contains(r.error().message(), "'" + addr + "'"));
    CHECK(m.exposer_port() == 0);
  }
  SECTION("busy with another exposer") {
    af::metrics other{"n2", "0.1.0"};
    auto p = other.start_exposer("127.0.0.1:0");
    REQUIRE(p);
    const std::string addr = "127.0.0.1:" + std::to_string(*p);
    auto r = m.start_exposer(addr);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error().message(), addr));
  }
  SECTION("malformed") {
    for (const std::string addr :
         {"nonsense", "127.0.0.1:70000", ":9464", "127.0.0.1:80s", "127.0.0.1:1,127.0.0.1:2",
          "999.1.1.1:0", "::1:0", "127.0.0.1:"}) {
      auto r = m.start_exposer(addr);
      REQUIRE_FALSE(r);
      CHECK(r.error().code() == af::errc::validation);
      CHECK(contains(r.error().message(), addr));
    }
  }
  SECTION("not a local address") {
    auto r = m.start_exposer("192.0.2.1:0"); // TEST-NET-1, never assigned to this host
    REQUIRE_FALSE(r);
    CHECK(contains(r.error().message(), "192.0.2.1:0"));
  }
}

TEST_CASE("promtool accepts the exposition", "[metrics]") {
  if (!on_path("promtool")) {
    WARN("promtool not on PATH (Debian package `prometheus`): skipped");
    return;
  }
  af::metrics m{"n1", "0.1.0"};
  m.agent_messages("acme", "echo", af::message_outcome::handled).inc();
  m.agent_messages("acme", "echo", af::message_outcome::rejected).inc();
  m.ask_duration("echo").observe(0.01);
  m.agents_active().set(2);
  m.envelope_rejected(af::reject_reason::malformed).inc();
  temp_dir dir;
  const auto metrics_file = dir.path / "metrics.txt";
  const auto out_file = dir.path / "promtool.out";
  {
    std::ofstream out{metrics_file};
    out << m.serialize_text();
  }
  const std::string cmd =
      "promtool check metrics < '" + metrics_file.string() + "' > '" + out_file.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in{out_file};
  std::stringstream output;
  output << in.rdbuf();
  INFO("promtool: " << output.str());
  INFO(m.serialize_text());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
