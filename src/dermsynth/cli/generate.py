"""``dermsynth generate ...``: commands of the generate stage (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from dermsynth.cli.options import backend_option, finite, generator_settings
from dermsynth.config import PAPER_TEMPLATE, MaskConfig
from dermsynth.errors import DermsynthError


def _mask_help(name: str) -> str:
    info = MaskConfig.model_fields[name]
    return f"{info.description} [default: {info.default}]"


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
    n: int = typer.Option(8, "--n", min=1, help="Candidates per seed (paper: 8)."),
    model: str | None = backend_option("model"),
    preset: str | None = typer.Option(
        None, "--preset", help="diffusers: a published recipe (synderm-inpaint, synderm-txt2img)."
    ),
    mode: str | None = backend_option("mode"),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="Prompt table from `generate prompts` (default: built-in defaults)."
    ),
    template: str | None = backend_option("template"),
    steps: int | None = backend_option("steps"),
    guidance: float | None = backend_option("guidance"),
    strength: float | None = backend_option("strength"),
    negative_prompt: str | None = backend_option("negative_prompt"),
    scheduler: str | None = backend_option("scheduler"),
    resolution: int | None = backend_option("resolution"),
    precision: str | None = backend_option("precision"),
    device: str | None = backend_option("device"),
    batch_size: int | None = backend_option("batch_size"),
    lora: str | None = backend_option("lora"),
    lora_scale: float | None = backend_option("lora_scale"),
    safety_checker: bool | None = backend_option(
        "safety_checker", "--safety-checker/--no-safety-checker"
    ),
    random_seed: int | None = backend_option("random_seed"),
    mask_keep: float | None = typer.Option(None, "--mask-keep", help=_mask_help("keep")),
    mask_shape: str | None = typer.Option(None, "--mask-shape", help=_mask_help("shape")),
    mask_feather: float | None = typer.Option(None, "--mask-feather", help=_mask_help("feather")),
    crop_scale: float | None = typer.Option(None, "--crop-scale", help=_mask_help("crop_scale")),
    retries: int | None = backend_option("retries"),
    executor: str = typer.Option(
        "local", "--executor", help="local, or ray (shard seeds over Ray workers)."
    ),
    workers: int = typer.Option(
        0, "--workers", min=0, help="ray: number of shards (default: GPUs, else 2)."
    ),
    shard_size: int | None = typer.Option(
        None,
        "--shard-size",
        help="Write WebDataset shards of about this many images (whole seeds each) instead of "
        "one PNG per image: for large runs.",
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
    if executor not in ("local", "ray"):
        raise DermsynthError(f"--executor must be local or ray, got {executor!r}")
    mask = {
        "keep": mask_keep,
        "shape": mask_shape,
        "feather": mask_feather,
        "crop_scale": crop_scale,
    }
    params = generator_settings(
        backend=backend, model=model, preset=preset, mode=mode, template=template, steps=steps,
        guidance=guidance, strength=strength, negative_prompt=negative_prompt,
        scheduler=scheduler, resolution=resolution, precision=precision, device=device,
        batch_size=batch_size, lora=lora, lora_scale=lora_scale, safety_checker=safety_checker,
        random_seed=random_seed, retries=retries,
        mask={k: v for k, v in mask.items() if v is not None} or None,
    )  # fmt: skip
    if executor == "ray" and shard_size is not None:
        raise DermsynthError("--shard-size runs locally for now; leave out --executor ray")
    if executor == "ray":
        from dermsynth.generate.ray_executor import generate_with_ray

        summary = generate_with_ray(
            seeds, out, params, n, workers=workers or None, prompts_csv=prompts, progress=progress
        )
    else:
        from dermsynth.generate.run import generate as run_generate

        summary = run_generate(
            seeds, out, params, n, prompts_csv=prompts, progress=progress, shard_size=shard_size
        )
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
        ...,
        "--out",
        help="Folder to write: LoRA weights (generate --lora OUT) or, with dreambooth, a "
        "diffusers pipeline (generate --backend diffusers --model OUT).",
    ),
    method: str = typer.Option(
        "lora", "--method", help="lora (adapters on the UNet) or dreambooth (the whole UNet)."
    ),
    model: str = typer.Option(
        "tiny", "--model", help="tiny, a hub id or a local diffusers folder."
    ),
    mode: str = typer.Option(
        "text2img", "--mode", help="text2img or inpaint (a 9-channel inpainting UNet)."
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Optimizer steps (default: lora 500; dreambooth: --epochs)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Passes over the images, when --steps is not given (dreambooth 4)."
    ),
    learning_rate: float | None = typer.Option(
        None,
        "--learning-rate",
        help="AdamW learning rate (default: lora 1e-4, dreambooth 5e-6).",
        callback=finite,
    ),
    lr_schedule: str = typer.Option(
        "constant", "--lr-schedule", help="constant, linear, cosine or polynomial (diffusers')."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Images per step (default: lora 1, dreambooth 4)."
    ),
    rank: int = typer.Option(4, "--rank", help="LoRA rank."),
    resolution: int | None = typer.Option(
        None, "--resolution", help="Training side (default 512; tiny 64)."
    ),
    template: str | None = typer.Option(
        None,
        "--template",
        help="Prompt template of the training images (default: lora the paper's, dreambooth "
        "'An image of {condition}, a skin disease').",
    ),
    train_text_encoder: bool = typer.Option(
        False, "--train-text-encoder", help="dreambooth: train the text encoder too."
    ),
    prior_preservation: bool = typer.Option(
        False, "--prior-preservation", help="Add the loss on class images made by the base model."
    ),
    class_prompt: str = typer.Option(
        "An image of a skin disease", "--class-prompt", help="Prompt of the class images."
    ),
    num_class_images: int = typer.Option(
        100, "--num-class-images", help="Class images (the missing ones are generated)."
    ),
    class_steps: int = typer.Option(
        25, "--class-steps", help="Denoising steps of each generated class image."
    ),
    prior_loss_weight: float = typer.Option(
        1.0, "--prior-loss-weight", help="Weight of the class images' loss.", callback=finite
    ),
    class_dir: Path | None = typer.Option(
        None, "--class-dir", help="Folder of class images (default: OUT-class-images beside OUT)."
    ),
    random_seed: int = typer.Option(0, "--random-seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto", "--precision", help="Frozen weights: auto (fp16 on GPU), fp32, fp16, bf16."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune Stable Diffusion on one condition: LoRA adapters or full DreamBooth."""
    from dermsynth.generate.finetune import LORA_FILE, FinetuneParams, finetune

    params = FinetuneParams(
        model=model, condition=condition, method=method, mode=mode, steps=steps, epochs=epochs,
        learning_rate=learning_rate, lr_schedule=lr_schedule, batch_size=batch_size, rank=rank,
        resolution=resolution, template=template, train_text_encoder=train_text_encoder,
        prior_preservation=prior_preservation, class_prompt=class_prompt,
        num_class_images=num_class_images, class_steps=class_steps, prior_loss_weight=prior_loss_weight,
        class_dir=str(class_dir) if class_dir else None, random_seed=random_seed, device=device,
        precision=precision,
    )  # fmt: skip
    folder = finetune(data, out, params, progress=progress)
    if method == "lora":
        typer.echo(
            f"wrote {folder / LORA_FILE}; generate with it: dermsynth generate ... --lora {folder}"
        )
    else:
        typer.echo(
            f"wrote the pipeline folder {folder}; generate with it: dermsynth generate ... "
            f"--backend diffusers --model {folder} --mode {mode}"
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
        callback=finite,
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
