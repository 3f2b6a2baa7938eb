// `quartet diagnose CHECKPOINT`: the gradient-estimation measurements of the Quartet II paper on a
// trained model's real activations and gradients (docs/diagnostics.md): for each recipe, layer and
// backward product, the error of one draw and the bias of the mean of k draws, against the exact
// product and (where the backward pass re-uses a forward-quantized operand) against the
// forward-quantized one. A table on stdout; with --out, diagnose.json and diagnose.png.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>

#include "cli/commands.h"
#include "cli/diagnose_plot.h"
#include "cli/gnuplot.h"
#include "cli/option_checks.h"
#include "cli/progress.h"
#include "quartet/data/dataset.h"
#include "quartet/data/tokenizer.h"
#include "quartet/error.h"
#include "quartet/train/checkpoint.h"
#include "quartet/train/config.h"
#include "quartet/train/devices.h"
#include "quartet/train/trained_model.h"
#include "quartet/train/diagnose.h"
#include "quartet/util/files.h"

namespace quartet::cli {

namespace {

// Every recipe of recipes.md that quantizes its backward pass, except nvidia+4/6: its backward
// pass is nvidia's, operand for operand (4/6 changes only the forward X, which nvidia's backward
// does not re-use), so it would repeat nvidia's figures.
constexpr const char* kDefaultRecipes = "quartet2,nvidia,tetrajet2,quartet1,quartet1-sr";
constexpr const char* kLinearKinds[] = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};

struct DiagnoseOptions {
  std::string checkpoint;
  std::string recipes = kDefaultRecipes;
  std::int64_t draws = 64;
  std::string layers;
  std::string data;
  std::int64_t batch = 0, seq = 0;  // 0: the checkpoint's
  std::string device = "auto";
  std::string out;
  std::optional<std::uint64_t> seed;  // unset: the checkpoint's
  bool verbose = false;
  bool no_plot = false;
  bool force = false;
};

std::vector<std::string> split_list(const std::string& list, const char* option) {
  std::vector<std::string> items;
  for (std::size_t start = 0;;) {
    const std::size_t comma = std::min(list.find(',', start), list.size());
    items.push_back(list.substr(start, comma - start));
    if (items.back().empty()) throw Error(fmt::format("{} '{}' has an empty entry", option, list));
    if (comma == list.size()) return items;
    start = comma + 1;
  }
}

// The recipes to measure; Error (a usage error) for an unknown one, one given twice, or one whose
// backward pass runs in BF16.
std::vector<Recipe> parse_recipes(const std::string& list) {
  std::vector<Recipe> recipes;
  std::set<std::string> seen;
  for (const std::string& name : split_list(list, "--recipes")) {
    if (!seen.insert(name).second) throw Error(fmt::format("--recipes names {} twice", name));
    Recipe r;
    try {
      r = make_recipe(name);
    } catch (const Error& e) {
      throw Error(fmt::format("--recipes: {}", e.what()));
    }
    if (!r.quantizes_backward()) {
      throw Error(fmt::format("--recipes: recipe {} runs its backward pass in BF16; there is nothing to measure", name));
    }
    recipes.push_back(std::move(r));
  }
  return recipes;
}

// --layers: block numbers ("1"), linear kinds ("o_proj": in every block) or full names
// ("layers.1.o_proj"). The syntax is checked before anything runs; the block numbers against the
// model once the checkpoint is read.
struct LayerSelection {
  struct Item {
    std::optional<std::int64_t> block;
    std::string kind;  // empty: every kind
  };
  std::vector<Item> items;  // empty: every layer

  static LayerSelection parse(const std::string& list) {
    LayerSelection s;
    if (list.empty()) return s;
    const std::regex full(R"(layers\.([0-9]{1,9})\.([a-z_]+))"), block(R"([0-9]{1,9})");
    const auto known_kind = [](const std::string& k) {
      return std::find(std::begin(kLinearKinds), std::end(kLinearKinds), k) != std::end(kLinearKinds);
    };
    for (const std::string& item : split_list(list, "--layers")) {
      std::smatch m;
      if (std::regex_match(item, m, full) && known_kind(m[2])) {
        s.items.push_back({std::stoll(m[1]), m[2]});
      } else if (std::regex_match(item, block)) {
        s.items.push_back({std::stoll(item), ""});
      } else if (known_kind(item)) {
        s.items.push_back({std::nullopt, item});
      } else {
        throw Error(fmt::format("--layers: '{}' is not a block number, a layer kind ({}) or a layer name like "
                                "layers.0.qkv_proj",
                                item, fmt::join(kLinearKinds, ", ")));
      }
    }
    return s;
  }
  void check_blocks(std::int64_t blocks) const {
    for (const Item& i : items) {
      if (i.block && *i.block >= blocks) {
        throw Error(fmt::format("--layers: block {} does not exist; the model has {} blocks (0 to {})", *i.block, blocks,
                                blocks - 1));
      }
    }
  }
  bool keeps(const std::string& layer) const {
    if (items.empty()) return true;
    for (const Item& i : items) {
      const bool block_ok = !i.block || layer.rfind(fmt::format("layers.{}.", *i.block), 0) == 0;
      const bool kind_ok = i.kind.empty() || (layer.size() > i.kind.size() &&
                                              layer.compare(layer.size() - i.kind.size(), i.kind.size(), i.kind) == 0 &&
                                              layer[layer.size() - i.kind.size() - 1] == '.');
      if (block_ok && kind_ok) return true;
    }
    return false;
  }
};

std::string reference_label(GradientReference r) { return r == GradientReference::exact ? "exact" : "fwd-quantized"; }

// The table: one row per (recipe, product, reference), the figures averaged over the layers; with
// `layers` also one row per layer below each recipe's.
void print_table(const std::vector<MeanEstimator>& means, const std::vector<LayerEstimators>& layers, bool verbose) {
  const std::vector<std::int64_t>& ks = means.front().k;
  std::size_t recipe_width = 6, layer_width = 0;
  for (const MeanEstimator& m : means) recipe_width = std::max(recipe_width, m.recipe.size());
  if (verbose) {
    for (const LayerEstimators& l : layers) layer_width = std::max(layer_width, l.layer.size());
  }
  const auto row = [&](const std::string& recipe, const std::string& layer, LinearGemm product, GradientReference ref,
                       double error, const std::vector<double>& bias, double slope, double limit) {
    std::string s = fmt::format("{:<{}}", recipe, recipe_width);
    if (verbose) s += fmt::format("  {:<{}}", layer, layer_width);
    s += fmt::format("  {:<7} {:<13} {:>7.4f} |", gemm_name(product), reference_label(ref), error);
    for (double b : bias) s += fmt::format(" {:>7.4f}", b);
    s += fmt::format(" | {:>6.2f} {:>7.4f}", slope, limit);
    fmt::print("{}\n", s);
  };
  std::string header = fmt::format("{:<{}}", "recipe", recipe_width);
  if (verbose) header += fmt::format("  {:<{}}", "layer", layer_width);
  header += fmt::format("  {:<7} {:<13} {:>7} |", "product", "reference", "error");
  for (std::size_t i = 0; i < ks.size(); ++i) {
    header += fmt::format(" {:>7}", i == 0 ? fmt::format("k={}", ks[i]) : fmt::format("{}", ks[i]));
  }
  header += fmt::format(" | {:>6} {:>7}", "slope", "limit");
  fmt::print("{}\n{}\n", header, std::string(header.size(), '-'));
  std::string last_recipe;
  for (const MeanEstimator& m : means) {
    if (verbose && !last_recipe.empty() && m.recipe != last_recipe) fmt::print("\n");
    last_recipe = m.recipe;
    row(m.recipe, verbose ? fmt::format("mean of {}", m.layers) : "", m.product, m.reference, m.error, m.bias, m.slope,
        m.bias_limit);
    if (!verbose) continue;
    for (const LayerEstimators& l : layers) {
      if (l.recipe != m.recipe) continue;
      for (const EstimatorCurve& c : l.curves) {
        if (c.product == m.product && c.reference == m.reference) {
          row("", l.layer, c.product, c.reference, c.error(), c.bias, c.slope(), c.bias_limit());
        }
      }
    }
  }
  fmt::print("\nerror: ||G_b - G|| / ||G|| of one draw (mean over the draws); k=...: the bias ||mean of draws 1..k - G|| "
             "/ ||G||;\nslope: of log bias over log k (-0.50 for an unbiased estimator, 0 for a plateau); limit: the bias "
             "left as k grows,\nestimated without the draws' noise. Reference exact: G is the BF16 product of the real "
             "tensors; fwd-quantized: G\nwith the forward-quantized operand the backward pass re-uses (re-quantized or "
             "reused transposed), which an unbiased\nbackward quantizer averages to. Figures are means over the layers"
             "{}.\n",
             verbose ? " (rows \"mean of N\"), then each layer's" : " (--verbose: each layer's)");
}

}  // namespace

Command add_diagnose_command(CLI::App& parent) {
  auto o = std::make_shared<DiagnoseOptions>();
  CLI::App* app = parent.add_subcommand(
      "diagnose", "Measure each recipe's backward gradient estimators on a checkpoint's real activations and "
                  "gradients: the error of one draw and the bias of the mean of k draws (docs/diagnostics.md)");
  app->add_option("checkpoint", o->checkpoint, "checkpoint folder or run folder (its latest checkpoint)")->required();
  app->add_option("--recipes", o->recipes, "comma-separated recipes to measure")->capture_default_str();
  app->add_option("--draws", o->draws, "independent draws of each backward pass (B)")
      ->capture_default_str()
      ->check(integer_in(2, 1 << 16));
  app->add_option("--layers", o->layers,
                  "comma-separated layers to measure: block numbers (1), kinds (o_proj) or names (layers.1.o_proj); "
                  "default: every linear layer of the blocks");
  app->add_option("--data", o->data,
                  "where the micro-batch comes from: embedded:austen or a folder of shards (default: the checkpoint's "
                  "data); its validation split, or the training split when that is too short");
  app->add_option("--batch", o->batch, "sequences in the micro-batch (default: the checkpoint's)")
      ->check(integer_in(1, kMaxInt32));
  app->add_option("--seq", o->seq, "tokens per sequence (default: the checkpoint's)")->check(integer_in(2, kMaxInt32));
  app->add_option("--device", o->device, "auto (the GPU if there is one), cpu or cuda")
      ->capture_default_str()
      ->check(name_one_of({"auto", "cpu", "cuda"}));
  app->add_option_function<std::uint64_t>(
         "--seed", [o](const std::uint64_t& v) { o->seed = v; }, "seed of the draws (default: the checkpoint's run seed)")
      ->check(unsigned_integer());
  app->add_option("--out", o->out, "folder for diagnose.json and diagnose.png (default: the table only)");
  app->add_flag("--verbose", o->verbose, "print each layer's rows too");
  app->add_flag("--no-plot", o->no_plot, "with --out, write no diagnose.png");
  app->add_flag("--force", o->force, "replace the diagnose.json and diagnose.png already in --out");

  Command command;
  command.app = app;
  command.check = [o]() {
    parse_recipes(o->recipes);
    LayerSelection::parse(o->layers);
    if (!o->out.empty()) {
      const std::filesystem::path out(o->out);
      if (std::filesystem::exists(out) && !std::filesystem::is_directory(out)) {
        throw Error(fmt::format("--out {} exists and is not a folder", o->out));
      }
      if (!o->force && std::filesystem::exists(out / "diagnose.json")) {
        throw Error(fmt::format("--out {} already holds a diagnosis (diagnose.json); use --force to replace it", o->out));
      }
    }
  };
  command.run = [o]() {
    const std::vector<Recipe> recipes = parse_recipes(o->recipes);
    const LayerSelection selection = LayerSelection::parse(o->layers);
    const bool plot = !o->out.empty() && !o->no_plot;
    if (plot && !gnuplot_available()) throw Error(std::string(kGnuplotMissing) + "; install it or pass --no-plot");

    const TrainedModel trained = read_trained_model(o->checkpoint);
    const std::filesystem::path& dir = trained.dir;
    const TrainConfig& c = trained.config;
    const LlamaConfig& mc = trained.model;
    selection.check_blocks(mc.n_layers);
    const std::int64_t batch = o->batch ? o->batch : c.batch, seq = o->seq ? o->seq : c.seq;
    if (seq > mc.max_seq_len) {
      throw Error(fmt::format("--seq {} is longer than the model's maximum sequence length {}", seq, mc.max_seq_len));
    }
    for (const Recipe& r : recipes) {
      try {
        check_recipe_fits(mc, r, batch * seq);
      } catch (const Error& e) {
        throw Error(fmt::format("{} (the micro-batch: --batch {} x --seq {})", e.what(), batch, seq));
      }
    }
    const std::uint64_t seed = o->seed ? *o->seed : c.seed;
    const Dataset data = load_model_data(trained, o->data);
    const bool validation = static_cast<std::int64_t>(data.val.size()) >= batch * seq + 1;
    if (!validation) {
      fmt::print(stderr, "note: the validation split of {} ({} tokens) is shorter than one micro-batch of {} x {}; "
                         "the micro-batch comes from the training split\n",
                 data.source, data.val.size(), batch, seq);
    }
    BatchLoader loader(validation ? data.val : data.train, batch, seq, validation ? "validation" : "training");
    std::vector<std::int32_t> inputs, targets;
    loader.next(inputs, targets);

    const std::unique_ptr<Backend> backend = make_backend(o->device);
    LlamaModel model(*backend, mc, make_recipe("bf16"), c.seed);
    load_checkpoint_tensors(dir, *backend, model, nullptr);
    const std::vector<LinearCapture> layers =
        capture_linear_inputs(*backend, model, inputs, targets, batch, seq,
                              1.0 / static_cast<double>(batch * seq * c.grad_accum),
                              [&](const std::string& layer) { return selection.keeps(layer); });
    if (layers.empty()) throw Error(fmt::format("--layers {} selects no layer of the model", o->layers));
    const std::string setting = fmt::format(
        "{} (trained with {}, step {}); one {} micro-batch of {} x {} tokens from {}; {} draws, seed {}; {} layers; {}",
        dir.string(), c.recipe, trained.step, validation ? "validation" : "training", batch,
        seq, data.source, o->draws, seed, layers.size(), backend->name());
    fmt::print("quartet diagnose: {}\n\n", setting);
    std::fflush(stdout);

    std::vector<LayerEstimators> measured;
    ProgressLine progress("diagnose");
    const long total = static_cast<long>(recipes.size() * layers.size()) * o->draws;
    long done = 0;
    for (const Recipe& r : recipes) {
      for (const LinearCapture& l : layers) {
        measured.push_back({r.name, l.layer,
                            measure_estimator(*backend, r, l, o->draws, seed, [&](std::int64_t draw) {
                              progress.update(++done, total,
                                              fmt::format("{} {} draw {}/{}", r.name, l.layer, draw, o->draws));
                            })});
      }
    }
    progress.finish();
    const std::vector<MeanEstimator> means = mean_over_layers(measured);
    print_table(means, measured, o->verbose);

    if (o->out.empty()) return 0;
    const std::filesystem::path out(o->out);
    std::filesystem::create_directories(out);
    nlohmann::ordered_json report;
    report["checkpoint"] = dir.string();
    report["step"] = trained.step;
    report["trained_recipe"] = c.recipe;
    report["data"] = data.source;
    report["split"] = validation ? "validation" : "train";
    report["batch"] = batch;
    report["seq"] = seq;
    report["draws"] = o->draws;
    report["seed"] = seed;
    report["device"] = backend->name();
    report["k"] = bias_draw_counts(o->draws);
    report["mean"] = estimator_means_json(means);
    report["rows"] = estimator_rows_json(measured);
    write_file_atomic(out / "diagnose.json", report.dump(2) + "\n");
    fmt::print("\nwrote {}", (out / "diagnose.json").string());
    if (plot) {
      plot_diagnose(means, fmt::format("{}, step {}, {} draws", c.recipe, trained.step, o->draws),
                    out / "diagnose.png");
      fmt::print(" and {}", (out / "diagnose.png").string());
    }
    fmt::print("\n");
    return 0;
  };
  return command;
}

}  // namespace quartet::cli
