// open_url: store URLs pick the right backend and location; unknown ones are errors naming the URL.
#include "af/store/backend.hpp"
#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <filesystem>

using namespace af;
using namespace af::store;
namespace fs = std::filesystem;

TEST_CASE("open_url: memory and sqlite URLs and plain paths", "[open_url]") {
  auto mem = open_url("memory:");
  REQUIRE(mem);
  CHECK((*mem)->kind() == "memory");

  af::test::temp_dir dir{"af-url"};
  const auto file = (dir.path() / "a" / "store.db").string();
  auto s = open_url("sqlite:" + file);
  REQUIRE(s);
  CHECK((*s)->kind() == "sqlite");
  CHECK((*s)->location() == file);
  CHECK(fs::is_regular_file(file));

  // sqlite:///abs/path is the same file.
  auto s3 = open_url("sqlite://" + file);
  REQUIRE(s3);
  CHECK((*s3)->location() == file);

  // A plain path names the file...
  const auto plain = (dir.path() / "b.db").string();
  auto p = open_url(plain);
  REQUIRE(p);
  CHECK((*p)->kind() == "sqlite");
  CHECK((*p)->location() == plain);

  // ...unless it is a directory (existing, or written with a slash): then DIR/agentflow.db.
  const auto existing = dir.path() / "data";
  fs::create_directories(existing);
  auto d = open_url(existing.string());
  REQUIRE(d);
  CHECK((*d)->location() == (existing / "agentflow.db").string());
  auto slash = open_url("sqlite:" + (dir.path() / "new-data").string() + "/");
  REQUIRE(slash);
  CHECK(fs::is_regular_file(dir.path() / "new-data" / "agentflow.db"));
}

TEST_CASE("open_url: unknown or malformed URLs are validation errors naming the URL",
          "[open_url]") {
  for (std::string url :
       {"mysql://root@localhost/db", "memory:/tmp/x", "sqlite:", "", "redis:6379"}) {
    INFO(url);
    auto r = open_url(url);
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == errc::validation);
    if (!url.empty()) CHECK_THAT(r.error().message(), Catch::Contains(url));
  }
}

TEST_CASE("open_url: postgres URLs go to the PostgreSQL backend", "[open_url]") {
  // Nothing listens on port 1: the PostgreSQL backend answers, not the URL parser.
  for (std::string url : {"postgres://af@127.0.0.1:1/af?connect_timeout=2",
                          "postgresql://af@127.0.0.1:1/af?connect_timeout=2"}) {
    INFO(url);
    auto r = open_url(url);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message(), !Catch::Contains("unknown scheme"));
    CHECK_THAT(r.error().message(), Catch::Contains("127.0.0.1"));
  }
}
