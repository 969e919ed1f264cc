"""``dermsynth generate ...``: commands of the generate stage (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from dermsynth.errors import DermsynthError

SEEDS = typer.Option(
    None, "--seeds", help="Seed manifest: a plan (rows with split=seed) or any manifest."
)

app = typer.Typer(
    help=(
        "Generate synthetic candidates from seed images: `dermsynth generate --seeds M --backend B "
        "--n 8 --out RUN`; `dermsynth generate prompts` writes the editable prompt table."
    ),
    invoke_without_command=True,
)
generator_app = typer.Typer(
    help="Generator models: fine-tune on your own images, or train the demo's.",
    no_args_is_help=True,
)


def register(app_root: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app_root.add_typer(app, name="generate")
    app_root.add_typer(generator_app, name="generator")


@app.callback()
def generate(
    ctx: typer.Context,
    seeds: Path | None = SEEDS,
    out: Path | None = typer.Option(
        None, "--out", help="Run folder (re-run the same command to resume)."
    ),
    backend: str = typer.Option(
        "diffusers",
        "--backend",
        help="diffusers, tiny (offline test model), openai, or demo (the small demo model).",
    ),
    n: int = typer.Option(8, "--n", help="Candidates per seed (paper: 8)."),
    model: str = typer.Option(
        "",
        "--model",
        help="diffusers: hub id or local folder; openai: model name (default dall-e-2); demo: folder from `generator train-demo` (default: the shipped one).",
    ),
    mode: str = typer.Option("inpaint", "--mode", help="inpaint, img2img or text2img."),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="Prompt table from `generate prompts` (default: built-in defaults)."
    ),
    template: str | None = typer.Option(
        None, "--template", help="Prompt template (default: the paper's)."
    ),
    steps: int = typer.Option(25, "--steps", help="Denoising steps."),
    guidance: float = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale."),
    strength: float | None = typer.Option(
        None,
        "--strength",
        help="How much of the seed to redraw, in (0, 1] (default 1 inpaint, 0.75 img2img).",
    ),
    negative_prompt: str = typer.Option(
        "", "--negative-prompt", help="What the images should not show."
    ),
    scheduler: str = typer.Option(
        "dpm",
        "--scheduler",
        help="dpm (DPM-Solver multistep), dpm-karras, ddim, euler, euler-a, pndm, default.",
    ),
    resolution: int | None = typer.Option(
        None,
        "--resolution",
        help="Square side in pixels (default: 512 diffusers, 64 tiny, 1024 openai, the model's 32 demo).",
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per pipeline call."),
    lora: str = typer.Option(
        "", "--lora", help="LoRA weights (folder or .safetensors) from `generator finetune`."
    ),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="Weight of the LoRA."),
    safety_checker: bool = typer.Option(
        False, "--safety-checker", help="Run the model's safety checker."
    ),
    random_seed: int = typer.Option(
        0, "--random-seed", help="Base seed; each image's seed derives from it."
    ),
    mask_keep: float = typer.Option(
        0.6, "--mask-keep", help="Kept central region of a generated mask (share of side)."
    ),
    mask_shape: str = typer.Option("ellipse", "--mask-shape", help="ellipse or rect."),
    mask_feather: float = typer.Option(
        4.0, "--mask-feather", help="Blur of the mask edge, in pixels."
    ),
    crop_scale: float = typer.Option(
        1.5, "--crop-scale", help="Crop side over the crop_box's longer side."
    ),
    retries: int = typer.Option(
        5, "--retries", help="openai: retries on 429 and 5xx, with backoff."
    ),
    executor: str = typer.Option(
        "local", "--executor", help="local, or ray (shard seeds over Ray workers)."
    ),
    workers: int = typer.Option(
        0, "--workers", help="ray: number of shards (default: GPUs, else 2)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate N candidates per seed image; resumable; every image with its provenance."""
    if ctx.invoked_subcommand is not None:
        return
    if seeds is None or out is None:
        raise DermsynthError(
            "give --seeds (a seed manifest) and --out (a run folder), e.g. "
            "`dermsynth generate --seeds plan.csv --backend tiny --n 8 --out runs/gen`; "
            "see `dermsynth generate --help`"
        )
    from dermsynth.generate.backends.base import GenerationParams
    from dermsynth.generate.prompts import PAPER_TEMPLATE
    from dermsynth.generate.seeds import MaskParams

    if executor not in ("local", "ray"):
        raise DermsynthError(f"--executor must be local or ray, got {executor!r}")
    params = GenerationParams(
        backend=backend,
        model=model,
        mode=mode,
        steps=steps,
        guidance=guidance,
        strength=strength,
        negative_prompt=negative_prompt,
        scheduler=scheduler,
        resolution=resolution,
        precision=precision,
        device=device,
        batch_size=batch_size,
        lora=lora,
        lora_scale=lora_scale,
        safety_checker=safety_checker,
        random_seed=random_seed,
        retries=retries,
    )
    mask = MaskParams(keep=mask_keep, shape=mask_shape, feather=mask_feather, crop_scale=crop_scale)
    kwargs = {
        "prompts_csv": prompts,
        "template": template or PAPER_TEMPLATE,
        "mask": mask,
        "progress": progress,
    }
    if executor == "ray":
        from dermsynth.generate.ray_executor import generate_with_ray

        summary = generate_with_ray(seeds, out, params, n, workers=workers or None, **kwargs)
    else:
        from dermsynth.generate.run import generate as run_generate

        summary = run_generate(seeds, out, params, n, **kwargs)
    typer.echo(
        f"made {summary.made} image(s), {summary.already} already there, of {summary.total}; "
        f"manifest: {summary.manifest}"
    )
    if summary.failures:
        kinds = ", ".join(f"{f['seed_id']} ({f['kind']})" for f in summary.failures[:5])
        typer.echo(
            f"warning: {len(summary.failures)} seed(s) failed: {kinds}; details in "
            f"{out / 'failures.csv'}; re-run the same command to retry them",
            err=True,
        )


@app.command("prompts")
def prompts_command(
    seeds: Path = typer.Option(
        ..., "--seeds", help="Seed manifest: a plan (rows with split=seed) or any manifest."
    ),
    out: Path = typer.Option(..., "--out", help="Prompt table to write (CSV, edit it by hand)."),
    template: str | None = typer.Option(
        None, "--template", help="Template to preview (default: the paper's)."
    ),
) -> None:
    """Write the per-seed prompt table (body part, noun, skin-type wording) for editing."""
    from dermsynth.generate.prompts import (
        PAPER_TEMPLATE,
        default_prompt_table,
        resolve_prompts,
        write_prompt_table,
    )
    from dermsynth.generate.seeds import load_seeds

    seed_rows = load_seeds(seeds)
    table = default_prompt_table(seed_rows)
    write_prompt_table(table, out)
    resolved = resolve_prompts(seed_rows, table, template or PAPER_TEMPLATE)
    typer.echo(f"wrote {out}: {len(table)} seed(s); edit body_part, noun or skin_type_description,")
    typer.echo("or write a whole prompt in the prompt column. Prompts now:")
    for row in resolved.head(10).itertuples(index=False):
        typer.echo(f"  {row.image_id}: {row.prompt}")
    if len(resolved) > 10:
        typer.echo(f"  ... and {len(resolved) - 10} more")


@generator_app.command("finetune")
def finetune_command(
    data: Path = typer.Option(
        ..., "--data", help="Manifest or plan (its split=train rows are used)."
    ),
    condition: str = typer.Option(..., "--condition", help="The condition whose images to learn."),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the LoRA weights (use with generate --lora)."
    ),
    model: str = typer.Option(
        "tiny", "--model", help="tiny, a hub id or a local diffusers folder."
    ),
    mode: str = typer.Option(
        "text2img", "--mode", help="text2img or inpaint (a 9-channel inpainting UNet)."
    ),
    steps: int = typer.Option(500, "--steps", help="Optimizer steps."),
    learning_rate: float = typer.Option(1e-4, "--learning-rate", help="AdamW learning rate."),
    rank: int = typer.Option(4, "--rank", help="LoRA rank."),
    batch_size: int = typer.Option(1, "--batch-size", help="Images per step."),
    resolution: int | None = typer.Option(
        None, "--resolution", help="Training side (default 512; tiny 64)."
    ),
    random_seed: int = typer.Option(0, "--random-seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto", "--precision", help="Frozen weights: auto (fp16 on GPU), fp32, fp16, bf16."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """LoRA (DreamBooth-style) fine-tuning of a Stable Diffusion UNet on one condition."""
    from dermsynth.generate.finetune import LORA_FILE, FinetuneParams, finetune

    params = FinetuneParams(
        model=model,
        condition=condition,
        mode=mode,
        steps=steps,
        learning_rate=learning_rate,
        rank=rank,
        batch_size=batch_size,
        resolution=resolution,
        random_seed=random_seed,
        device=device,
        precision=precision,
    )
    folder = finetune(data, out, params, progress=progress)
    typer.echo(
        f"wrote {folder / LORA_FILE}; generate with it: dermsynth generate ... --lora {folder}"
    )


@generator_app.command("train-demo")
def train_demo_command(
    out: Path = typer.Option(
        ..., "--out", help="Model folder to write (use with generate --backend demo --model)."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Manifest or plan (split=train rows only); default: the shipped model's own simulated draw.",
    ),
    resolution: int | None = typer.Option(
        None, "--resolution", help="Side of the images it learns and makes (default: as shipped)."
    ),
    channels: str | None = typer.Option(
        None,
        "--channels",
        help="UNet channels per level, finest first, e.g. 32,64,128 (default: as shipped).",
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Optimizer steps (default: as shipped)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Images per step (default: as shipped)."
    ),
    learning_rate: float | None = typer.Option(
        None,
        "--learning-rate",
        help="Peak AdamW learning rate, cosine decay (default: as shipped).",
    ),
    random_seed: int = typer.Option(0, "--random-seed"),
    work_dir: Path | None = typer.Option(
        None,
        "--work-dir",
        help="Without --data: keep the simulated draw here (default: a temporary folder).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train the demo's small conditional diffusion model; without --data, reproduce the shipped one."""
    from dermsynth.generate.demo import (
        DemoTrainConfig,
        read_record,
        reproduce_shipped_model,
        train_demo_generator,
    )

    given: dict[str, object] = {
        "resolution": resolution,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "random_seed": random_seed,
    }
    if channels is not None:
        try:
            given["block_out_channels"] = tuple(int(c) for c in channels.split(","))
        except ValueError:
            raise DermsynthError(
                f"--channels must be integers separated by commas, like 32,64,128; got {channels!r}"
            ) from None
    # Options left out keep the shipped model's settings (DemoTrainConfig's defaults).
    config = DemoTrainConfig(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
    if data is None:
        folder = reproduce_shipped_model(out, config, work_dir=work_dir, progress=progress)
    else:
        folder = train_demo_generator(data, out, config, progress=progress)
    record = read_record(folder)
    typer.echo(
        f"wrote {folder}: {record['data']['images']} training image(s), "
        f"{len(record['conditions'])} condition(s), final loss {record['loss_curve'][-1][1]}, "
        f"{record['train_seconds']} s; generate with it: "
        f"dermsynth generate ... --backend demo --model {folder} --mode img2img"
    )
