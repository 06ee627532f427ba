// The library example: a librarian agent spawns shelf agents and answers lookups and loans by
// asking them; reader agents borrow books by asking the librarian. Shows tell, ask (agent to
// agent, replied later through a responder), spawn of children and error replies.
// Exits 0 when every check passes. docs/agents.md walks through it.
#include "af/node.hpp"
#include "library.pb.h"

#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pb = af::examples::library::v1;
using namespace std::chrono_literals;

namespace {

constexpr auto k_ask_timeout = 2s;
constexpr auto k_loan_period = std::chrono::hours(24 * 14);
constexpr std::string_view k_loans_help = "Borrow requests by outcome";

/// Holds some books; lends each to one reader at a time.
class shelf : public af::agent_base<shelf> {
public:
  static void define(af::handlers<shelf>& h) {
    h.kind("library.shelf").on(&shelf::on_shelve).on(&shelf::on_lookup).on(&shelf::on_borrow);
  }

  void on_start(af::context& ctx) override {
    // Fetch metric handles once; `inc` is then a single atomic add.
    // A handle that failed to register stays default-constructed and ignores updates.
    auto& m = ctx.metrics();
    if (auto c = m.counter("library_loans_total", k_loans_help, {{"outcome", "lent"}})) lent_ = *c;
    if (auto c = m.counter("library_loans_total", k_loans_help, {{"outcome", "refused"}}))
      refused_ = *c;
  }

  // Tell shape: nothing to reply (an ask would get google.protobuf.Empty back).
  void on_shelve(af::context& ctx, const pb::Shelve& s) {
    books_[s.book().isbn()] = s.book();
    ctx.log().debug("book_shelved", s.book().title(), {{"isbn", s.book().isbn()}});
  }

  // Reply-or-error shape: the asker gets the Book or this af::error.
  af::expected<pb::Book> on_lookup(af::context& ctx, const pb::Lookup& l) {
    auto it = books_.find(l.isbn());
    if (it == books_.end())
      return af::not_found_error("no book with isbn '" + l.isbn() + "' on shelf '" + ctx.name()
                                 + "'");
    return it->second;
  }

  af::expected<pb::Loan> on_borrow(af::context& ctx, const pb::Borrow& b) {
    auto it = books_.find(b.isbn());
    if (it == books_.end()) {
      refused_.inc();
      return af::not_found_error("no book with isbn '" + b.isbn() + "' on shelf '" + ctx.name()
                                 + "'");
    }
    if (auto lent = lent_to_.find(b.isbn()); lent != lent_to_.end()) {
      refused_.inc();
      return af::make_error(af::errc::conflict, "'" + it->second.title() + "' is already lent to '"
                                                    + lent->second + "'");
    }
    lent_to_[b.isbn()] = b.reader();
    lent_.inc();
    pb::Loan loan;
    loan.set_loan_id(ctx.next_id().to_string()); // ids and time come from the node's services
    *loan.mutable_book() = it->second;
    loan.set_reader(b.reader());
    loan.set_shelf(ctx.name());
    const auto due = std::chrono::floor<std::chrono::seconds>(ctx.now() + k_loan_period);
    loan.set_due_unix_s(due.time_since_epoch().count());
    return loan;
  }

private:
  std::map<std::string, pb::Book> books_;
  std::map<std::string, std::string> lent_to_; // isbn -> reader
  af::counter_handle lent_, refused_;
};

/// The front desk: spawns its shelves on start and routes each isbn to one of them.
class librarian : public af::agent_base<librarian> {
public:
  explicit librarian(std::uint32_t shelves) : shelf_count_(shelves) {}

  static void define(af::handlers<librarian>& h) {
    h.kind("library.librarian")
        .on(&librarian::on_shelve)
        .on(&librarian::on_lookup)
        .on(&librarian::on_borrow);
  }

  void on_start(af::context& ctx) override {
    // Children are registered on the node under their own (unique) names and stop with us.
    for (std::uint32_t i = 0; i < shelf_count_; ++i) {
      auto ref = ctx.spawn<shelf>(ctx.name() + ".shelf-" + std::to_string(i));
      if (!ref) return ctx.fail(ref.error());
      shelves_.push_back(*ref);
    }
    ctx.log().info("library_opened", "shelves spawned", {{"shelves", shelf_count_}});
  }

  void on_shelve(af::context& ctx, const pb::Shelve& s) {
    if (const auto* to = shelf_for(s.book().isbn()))
      ctx.tell(*to, s); // fire and forget; order between two agents is preserved
  }

  // Replies-later shape: the answer comes from a shelf, so the responder is kept until then.
  void on_lookup(af::context& ctx, const pb::Lookup& l, af::responder<pb::Book> reply) {
    forward(ctx, l.isbn(), l, std::move(reply));
  }

  void on_borrow(af::context& ctx, const pb::Borrow& b, af::responder<pb::Loan> reply) {
    if (b.reader().empty())
      return reply.fail(af::validation_error("borrow.reader: must not be empty"));
    forward(ctx, b.isbn(), b, std::move(reply));
  }

private:
  [[nodiscard]] const af::agent_ref* shelf_for(const std::string& isbn) const {
    if (shelves_.empty()) return nullptr;
    std::uint32_t h = 2166136261u; // FNV-1a: the same isbn always lands on the same shelf
    for (unsigned char c : isbn)
      h = (h ^ c) * 16777619u;
    return &shelves_[h % shelves_.size()];
  }

  /// Asks the isbn's shelf and passes its reply (or error) back to our own asker.
  template <class Reply, class Msg>
  void forward(af::context& ctx, const std::string& isbn, const Msg& msg,
               af::responder<Reply> reply) {
    const auto* to = shelf_for(isbn);
    if (to == nullptr) return reply.fail(af::internal_error("librarian has no shelves"));
    ctx.ask<Reply>(*to, msg, k_ask_timeout, [reply](af::expected<Reply> r) mutable {
      if (r)
        reply.reply(std::move(*r));
      else
        reply.fail(std::move(r).error());
    });
  }

  std::uint32_t shelf_count_;
  std::vector<af::agent_ref> shelves_;
};

/// Borrows every book of a reading list from the librarian, all asks in flight at once.
class reader : public af::agent_base<reader> {
public:
  explicit reader(std::string librarian) : librarian_(std::move(librarian)) {}

  static void define(af::handlers<reader>& h) {
    h.kind("library.reader").on(&reader::on_reading_list);
  }

  void on_reading_list(af::context& ctx, const pb::ReadingList& list,
                       af::responder<pb::ReadingReport> reply) {
    // State shared by the reply callbacks; they all run in this agent, one at a time.
    struct pending {
      pb::ReadingReport report;
      int outstanding = 0;
    };
    auto st = std::make_shared<pending>();
    st->report.set_reader(ctx.name());
    st->outstanding = list.isbns_size();
    if (st->outstanding == 0) return reply.reply(st->report);
    for (int i = 0; i < list.isbns_size(); ++i) {
      st->report.add_lines();
      pb::Borrow b;
      b.set_isbn(list.isbns(i));
      b.set_reader(ctx.name());
      ctx.ask<pb::Loan>(
          librarian_, b, k_ask_timeout, [st, reply, i](af::expected<pb::Loan> loan) mutable {
            auto& r = st->report;
            if (loan) {
              r.set_borrowed(r.borrowed() + 1);
              r.set_lines(i, "ok " + loan->book().title() + " (from " + loan->shelf() + ")");
            } else {
              r.set_failed(r.failed() + 1);
              r.set_lines(i, std::string{af::to_string(loan.error().code())} + ": "
                                 + loan.error().message());
            }
            if (--st->outstanding == 0) reply.reply(r);
          });
    }
  }

private:
  std::string librarian_;
};

pb::Book book(std::string isbn, std::string title, std::string author) {
  pb::Book b;
  b.set_isbn(std::move(isbn));
  b.set_title(std::move(title));
  b.set_author(std::move(author));
  return b;
}

} // namespace

int main() {
  int checks = 0;
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    ++checks;
    if (!ok) ++failures;
    std::cout << (ok ? "  ok    " : "  FAIL  ") << what << '\n';
  };

  // Defaults plus AF_* environment variables (AF_LOG_LEVEL=debug shows every shelved book).
  auto cfg = af::config::load({.file = {}, .env = af::config::process_environment(), .flags = {}});
  if (!cfg) {
    std::cerr << "config: " << cfg.error().to_string() << '\n';
    return 2;
  }
  auto started =
      af::node::start({.cfg = std::move(*cfg), .svc = {}, .log = {}, .system_services = {}});
  if (!started) {
    std::cerr << "node: " << started.error().to_string() << '\n';
    return 1;
  }
  af::node& n = **started;

  auto lib = n.spawn<librarian>("librarian", 3u);
  if (!lib) {
    std::cerr << "spawn librarian: " << lib.error().to_string() << '\n';
    return 1;
  }

  std::cout << "tell: shelving 4 books\n";
  const std::vector<pb::Book> books = {
      book("978-0262033848", "Introduction to Algorithms", "Cormen et al."),
      book("978-0201633610", "Design Patterns", "Gamma et al."),
      book("978-0131103627", "The C Programming Language", "Kernighan, Ritchie"),
      book("978-0321563842", "The C++ Programming Language", "Stroustrup"),
  };
  for (const auto& b : books) {
    pb::Shelve s;
    *s.mutable_book() = b;
    n.tell(*lib, s);
  }

  std::cout << "ask: lookups through the librarian (which asks its shelves)\n";
  pb::Lookup lookup;
  lookup.set_isbn(books[3].isbn());
  auto found = n.ask<pb::Book>(*lib, lookup, k_ask_timeout);
  check(found && found->title() == books[3].title(),
        "lookup " + lookup.isbn() + " -> " + (found ? found->title() : found.error().to_string()));

  lookup.set_isbn("978-0000000000");
  auto missing = n.ask<pb::Book>(*lib, lookup, k_ask_timeout);
  check(!missing && missing.error().code() == af::errc::not_found,
        "lookup " + lookup.isbn() + " -> " + (missing ? "found?!" : missing.error().to_string()));

  std::cout << "spawn readers; each asks the librarian for a loan per book\n";
  auto ada = n.spawn<reader>("reader-ada", std::string{"librarian"});
  auto bob = n.spawn<reader>("reader-bob", std::string{"librarian"});
  check(ada && bob, "spawned reader-ada and reader-bob");
  if (!ada || !bob) return 1;

  pb::ReadingList list;
  list.add_isbns(books[0].isbn());
  list.add_isbns(books[2].isbn());
  list.add_isbns("978-0000000000");
  auto ada_report = n.ask<pb::ReadingReport>(*ada, list, k_ask_timeout);
  check(ada_report && ada_report->borrowed() == 2 && ada_report->failed() == 1
            && ada_report->lines(2).starts_with("not_found: "),
        "reader-ada borrowed 2 of 3");
  if (ada_report)
    for (const auto& line : ada_report->lines())
      std::cout << "          " << line << '\n';

  pb::ReadingList wants_same;
  wants_same.add_isbns(books[0].isbn());
  auto bob_report = n.ask<pb::ReadingReport>(*bob, wants_same, k_ask_timeout);
  check(bob_report && bob_report->failed() == 1 && bob_report->lines(0).starts_with("conflict: "),
        "reader-bob is refused a book reader-ada holds: "
            + (bob_report && bob_report->lines_size() > 0 ? bob_report->lines(0) : "no report"));

  std::cout << "errors the asker sees\n";
  auto wrong_type = n.ask<pb::Book>(*lib, pb::ReadingList{}, k_ask_timeout);
  check(!wrong_type && wrong_type.error().code() == af::errc::validation,
        "unhandled type -> " + (wrong_type ? "a reply?!" : wrong_type.error().to_string()));

  pb::Borrow anonymous;
  anonymous.set_isbn(books[1].isbn());
  auto refused = n.ask<pb::Loan>(*lib, anonymous, k_ask_timeout);
  check(!refused && refused.error().code() == af::errc::validation,
        "borrow without a reader -> " + (refused ? "a loan?!" : refused.error().to_string()));

  auto stopped = n.stop_agent(*bob);
  auto after_stop = n.ask<pb::ReadingReport>(*bob, wants_same, k_ask_timeout);
  check(stopped && !after_stop && after_stop.error().code() == af::errc::not_found,
        "ask a stopped agent -> " + (after_stop ? "a reply?!" : after_stop.error().to_string()));

  auto lent = n.metrics().counter("library_loans_total", "", {{"outcome", "lent"}});
  check(lent && lent->value() == 2, "metric library_loans_total{outcome=\"lent\"} == 2");

  n.shutdown();
  std::cout << (checks - failures) << "/" << checks << " checks passed\n";
  return failures == 0 ? 0 : 1;
}
