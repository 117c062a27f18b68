//! The task arguments and answer printing shared by `edgeinfer local` (in-process) and the daemon
//! client commands: the same flags build the same [`Task`], and every [`Response`] prints the
//! same way whichever path produced it.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use edgeinfer_models::dinov2::Pooling;
use edgeinfer_models::llama::{Completion, Message, TokenEvent};
use edgeinfer_models::sam::{BoxPrompt, Point};

use crate::api::{
    ApiError, EmbedParams, Event, GenerateParams, ImageData, ImageRef, MaskFormat, Response, SegmentParams, Task,
};

/// The task subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum TaskCommand {
    /// Segment an image with point/box prompts (SAM).
    Segment(SegmentArgs),
    /// Embed images (DINOv2).
    Embed(EmbedArgs),
    /// Classify an image against the gallery (DINOv2).
    Classify(ClassifyArgs),
    /// Teach, forget or list gallery examples (DINOv2).
    #[command(subcommand)]
    Gallery(GalleryCommand),
    /// Generate text (LLM), streamed to the terminal.
    Generate(GenerateArgs),
}

/// `segment`.
#[derive(Args, Debug, Clone)]
pub struct SegmentArgs {
    /// The image (JPEG, PNG, BMP, WebP).
    pub image: PathBuf,
    /// A point `x,y` (foreground) or `x,y,0` (background), in image pixels. Repeatable.
    #[arg(long = "point", value_name = "X,Y[,LABEL]")]
    pub points: Vec<String>,
    /// A box `x0,y0,x1,y1` in image pixels.
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1")]
    pub bbox: Option<String>,
    /// The single-mask output instead of the three candidates.
    #[arg(long)]
    pub single: bool,
    /// Only the candidate with the best predicted IoU.
    #[arg(long)]
    pub best: bool,
    /// Write the best mask as a PNG here.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Bit depth of `--png`.
    #[arg(long, value_enum, default_value_t = PngDepth::Eight)]
    pub png_depth: PngDepth,
    /// Mask encoding in the answer.
    #[arg(long, value_enum, default_value_t = MaskFormatArg::Rle)]
    pub format: MaskFormatArg,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--png-depth`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngDepth {
    /// 1-bit greyscale.
    #[value(name = "1")]
    One,
    /// 8-bit greyscale, 0/255.
    #[value(name = "8")]
    Eight,
}

/// `--format` of `segment`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFormatArg {
    /// COCO RLE strings (pycocotools reads them).
    Rle,
    /// 1-bit PNG, base64.
    Png,
    /// 8-bit PNG, base64.
    Png8,
    /// Only scores, boxes and areas.
    None,
}

impl From<MaskFormatArg> for MaskFormat {
    fn from(f: MaskFormatArg) -> MaskFormat {
        match f {
            MaskFormatArg::Rle => MaskFormat::Rle,
            MaskFormatArg::Png => MaskFormat::Png,
            MaskFormatArg::Png8 => MaskFormat::Png8,
            MaskFormatArg::None => MaskFormat::None,
        }
    }
}

/// `--pooling` of `embed`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingArg {
    /// The CLS token.
    Cls,
    /// Mean of the patch tokens.
    Mean,
    /// The graph's pooler_output.
    Pooler,
    /// CLS and patch mean concatenated.
    #[value(name = "cls_mean")]
    ClsMean,
}

impl From<PoolingArg> for Pooling {
    fn from(p: PoolingArg) -> Pooling {
        match p {
            PoolingArg::Cls => Pooling::Cls,
            PoolingArg::Mean => Pooling::Mean,
            PoolingArg::Pooler => Pooling::Pooler,
            PoolingArg::ClsMean => Pooling::ClsMean,
        }
    }
}

/// `embed`.
#[derive(Args, Debug, Clone)]
pub struct EmbedArgs {
    /// Images to embed (batched).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Which vector represents an image.
    #[arg(long, value_enum, default_value_t = PoolingArg::Cls)]
    pub pooling: PoolingArg,
    /// L2-normalise the vectors.
    #[arg(long)]
    pub normalize: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `classify`.
#[derive(Args, Debug, Clone)]
pub struct ClassifyArgs {
    /// The image.
    pub image: PathBuf,
    /// How many labels.
    #[arg(short, long, default_value_t = 5)]
    pub k: usize,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `gallery`.
#[derive(Subcommand, Debug, Clone)]
pub enum GalleryCommand {
    /// Add an example image under a label.
    Add {
        /// The label.
        #[arg(long)]
        label: String,
        /// The image.
        image: PathBuf,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every example of a label, or one example by id.
    Remove {
        /// The label.
        #[arg(long, conflicts_with = "id")]
        label: Option<String>,
        /// The example id.
        #[arg(long)]
        id: Option<u64>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List labels and their example counts.
    List {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The prompt (a user message with `--chat`); `-` reads it from stdin.
    pub prompt: String,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// A system message (implies `--chat`).
    #[arg(long)]
    pub system: Option<String>,
    /// Most new tokens.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Top-k.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Top-p.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Repetition penalty.
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep going past EOS.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print the answer (text, token ids, usage) as JSON instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

impl TaskCommand {
    /// Whether the answer should be JSON.
    pub fn json(&self) -> bool {
        match self {
            TaskCommand::Segment(a) => a.json,
            TaskCommand::Embed(a) => a.json,
            TaskCommand::Classify(a) => a.json,
            TaskCommand::Gallery(GalleryCommand::Add { json, .. })
            | TaskCommand::Gallery(GalleryCommand::Remove { json, .. })
            | TaskCommand::Gallery(GalleryCommand::List { json }) => *json,
            TaskCommand::Generate(a) => a.json,
        }
    }

    /// Builds the task (reading image files).
    pub fn to_task(&self) -> Result<Task, ApiError> {
        Ok(match self {
            TaskCommand::Segment(a) => {
                let mut params = SegmentParams {
                    points: a.points.iter().map(|p| parse_point(p)).collect::<Result<_, _>>()?,
                    bbox: a.bbox.as_deref().map(parse_box).transpose()?,
                    multimask: !a.single,
                    best_only: a.best,
                    ..SegmentParams::default()
                };
                params.mask_format = a.format.into();
                if a.png.is_some() && params.mask_format != MaskFormat::Png8 && params.mask_format != MaskFormat::Png {
                    params.mask_format = if a.png_depth == PngDepth::One { MaskFormat::Png } else { MaskFormat::Png8 };
                }
                Task::Segment { image: ImageRef::Data(read_image(&a.image)?), params }
            }
            TaskCommand::Embed(a) => Task::Embed {
                images: a.images.iter().map(|p| read_image(p)).collect::<Result<_, _>>()?,
                params: EmbedParams { pooling: a.pooling.into(), normalize: a.normalize },
            },
            TaskCommand::Classify(a) => Task::Classify { image: read_image(&a.image)?, k: a.k },
            TaskCommand::Gallery(GalleryCommand::Add { label, image, .. }) => {
                Task::GalleryAdd { label: label.clone(), image: read_image(image)? }
            }
            TaskCommand::Gallery(GalleryCommand::Remove { label, id, .. }) => {
                Task::GalleryRemove { label: label.clone(), id: *id }
            }
            TaskCommand::Gallery(GalleryCommand::List { .. }) => Task::GalleryList,
            TaskCommand::Generate(a) => {
                let prompt = if a.prompt == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                        .map_err(|e| ApiError::bad_input(format!("cannot read the prompt from stdin: {e}")))?;
                    text
                } else {
                    a.prompt.clone()
                };
                let chat = a.chat || a.system.is_some();
                let messages = chat.then(|| {
                    let mut m = Vec::new();
                    if let Some(s) = &a.system {
                        m.push(Message { role: "system".into(), content: s.clone() });
                    }
                    m.push(Message { role: "user".into(), content: prompt.clone() });
                    m
                });
                Task::Generate(GenerateParams {
                    prompt: (!chat).then(|| prompt.clone()),
                    messages,
                    max_new_tokens: a.max_new_tokens,
                    temperature: a.temperature,
                    top_k: a.top_k,
                    top_p: a.top_p,
                    repetition_penalty: a.repetition_penalty,
                    seed: a.seed,
                    stop: a.stop.clone(),
                    ignore_eos: a.ignore_eos,
                    stream: Some(!a.json),
                })
            }
        })
    }
}

fn read_image(path: &std::path::Path) -> Result<ImageData, ApiError> {
    std::fs::read(path)
        .map(|b| ImageData::Encoded(b.into()))
        .map_err(|e| ApiError::bad_input(format!("cannot read image {}: {e}", path.display())))
}

fn numbers(s: &str, n: usize, what: &str) -> Result<Vec<f32>, ApiError> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::bad_input(format!("{what} '{s}': expected {n} comma-separated numbers")))?;
    Ok(v)
}

/// `x,y` or `x,y,label` (label 1 = foreground, 0 = background).
pub fn parse_point(s: &str) -> Result<Point, ApiError> {
    let v = numbers(s, 2, "point")?;
    match v.as_slice() {
        [x, y] => Ok(Point { x: *x, y: *y, positive: true }),
        [x, y, l] if *l == 0.0 || *l == 1.0 => Ok(Point { x: *x, y: *y, positive: *l == 1.0 }),
        _ => Err(ApiError::bad_input(format!("point '{s}': expected x,y or x,y,0|1"))),
    }
}

/// `x0,y0,x1,y1`.
pub fn parse_box(s: &str) -> Result<BoxPrompt, ApiError> {
    match numbers(s, 4, "box")?.as_slice() {
        [x0, y0, x1, y1] => Ok(BoxPrompt { x0: *x0, y0: *y0, x1: *x1, y1: *y1 }),
        _ => Err(ApiError::bad_input(format!("box '{s}': expected x0,y0,x1,y1"))),
    }
}

/// Prints a streamed event as it comes (generation text to stdout).
pub fn print_event(event: &Event, json: bool) {
    let Event::Token(TokenEvent::Delta { text, .. }) = event else { return };
    if !json {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// Prints an answer. Side outputs (mask PNG) are written here too.
pub fn print_response(command: &TaskCommand, response: &Response) -> Result<(), ApiError> {
    if let (TaskCommand::Segment(a), Response::Segmentation(s)) = (command, response)
        && let Some(path) = &a.png
    {
        let best = s.masks.iter().max_by(|x, y| x.score.total_cmp(&y.score));
        let png = best.and_then(|m| m.png.as_ref()).ok_or_else(|| ApiError::internal("no mask PNG in the answer"))?;
        std::fs::write(path, png).map_err(|e| ApiError::bad_input(format!("cannot write {}: {e}", path.display())))?;
    }
    if command.json() {
        let text = serde_json::to_string_pretty(response).map_err(|e| ApiError::internal(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    match response {
        Response::Segmentation(s) => {
            println!(
                "image {}x{} (hash {}, embedding {})",
                s.width,
                s.height,
                &s.image_hash[..12],
                if s.cache_hit { "cached" } else { "computed" }
            );
            for (i, m) in s.masks.iter().enumerate() {
                println!("mask {i}: score {:.4}  area {}  bbox {:?}  id {}", m.score, m.area, m.bbox, m.mask_id);
            }
            if let TaskCommand::Segment(SegmentArgs { png: Some(path), .. }) = command {
                println!("wrote the best mask to {}", path.display());
            }
        }
        Response::Embeddings { embeddings, dim } => {
            for (i, e) in embeddings.iter().enumerate() {
                let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
                let head: Vec<String> = e.iter().take(6).map(|v| format!("{v:.4}")).collect();
                println!("embedding {i}: dim {dim}  norm {norm:.4}  [{}, ...]", head.join(", "));
            }
        }
        Response::Classification { matches } => {
            if matches.is_empty() {
                println!("(the gallery is empty)");
            }
            for m in matches {
                println!("{:<24} {:.4}  (example {})", m.label, m.score, m.id);
            }
        }
        Response::GalleryAdded { id, label, entries } => {
            println!("added example {id} as '{label}' ({entries} in the gallery)")
        }
        Response::GalleryRemoved { removed } => println!("removed {removed} example(s)"),
        Response::GalleryLabels { labels } => {
            for (l, n) in labels {
                println!("{l:<24} {n}");
            }
        }
        Response::Generation(c) => print_completion(c),
    }
    Ok(())
}

fn print_completion(c: &Completion) {
    println!();
    eprintln!(
        "[{} prompt + {} generated tokens, finish: {:?}, time to first token {:.1} ms, {:.1} tokens/s]",
        c.usage.prompt_tokens,
        c.usage.generated_tokens,
        c.finish_reason,
        c.usage.time_to_first_token_ms,
        c.usage.tokens_per_second
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_and_boxes_parse() {
        assert_eq!(parse_point("10,20").unwrap(), Point { x: 10.0, y: 20.0, positive: true });
        assert!(!parse_point("1.5, 2,0").unwrap().positive);
        assert!(parse_point("1").is_err());
        assert!(parse_point("1,2,5").is_err());
        assert!(parse_point("a,b").is_err());
        assert_eq!(parse_box("1,2,3,4").unwrap().x1, 3.0);
        assert!(parse_box("1,2,3").is_err());
    }
}
