//! Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p,
//! after a repetition penalty — the order and semantics of transformers' logits processors.
//! Seeded sampling is reproducible.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Sampling parameters of a request. Unset fields take the model's `generation_config.json`
/// defaults, then greedy decoding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 (or unset without `do_sample` in the model's config) = greedy.
    pub temperature: Option<f32>,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability adds up to p (1 = off).
    pub top_p: Option<f32>,
    /// > 1 discourages tokens already in the prompt or output (1 = off).
    pub repetition_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
}

impl SamplingParams {
    /// Checks ranges; returns a clear error naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::BadInput(m));
        if let Some(t) = self.temperature
            && !(t.is_finite() && t >= 0.0)
        {
            return bad(format!("temperature must be >= 0, got {t}"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p must be in (0, 1], got {p}"));
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return bad(format!("repetition_penalty must be > 0, got {r}"));
        }
        Ok(())
    }
}

/// Picks tokens.
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    repetition_penalty: f32,
    rng: StdRng,
}

impl Sampler {
    /// A sampler; `temperature == 0` means greedy.
    pub fn new(temperature: f32, top_k: usize, top_p: f32, repetition_penalty: f32, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng::<StdRng>(),
        };
        Sampler { temperature, top_k, top_p, repetition_penalty, rng }
    }

    /// Whether this sampler is greedy.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The next token for `logits`, given the ids seen so far (prompt and output).
    pub fn next(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        if self.repetition_penalty != 1.0 {
            let mut seen: Vec<u32> = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / self.repetition_penalty } else { *l * self.repetition_penalty };
                }
            }
        }
        if self.is_greedy() {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l / self.temperature)).collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.top_k > 0 && self.top_k < candidates.len() {
            candidates.truncate(self.top_k);
        }
        let max = candidates.first().map(|c| c.1).unwrap_or(0.0);
        let mut probs: Vec<f32> = candidates.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            candidates.truncate(keep);
            let s: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let r: f32 = self.rng.random::<f32>();
        let mut acc = 0.0;
        for (c, p) in candidates.iter().zip(&probs) {
            acc += p;
            if r < acc {
                return c.0;
            }
        }
        candidates.last().map(|c| c.0).unwrap_or(0)
    }
}

/// Index of the largest value (first one on ties, as `torch.argmax`).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_after_the_repetition_penalty() {
        let mut s = Sampler::new(0.0, 0, 1.0, 1.0, None);
        assert_eq!(s.next(&mut [0.1, 2.0, 1.9], &[]), 1);
        let mut s = Sampler::new(0.0, 0, 1.0, 2.0, None);
        // 2.0 / 2 = 1.0 < 1.9: token 2 wins once 1 has been seen.
        assert_eq!(s.next(&mut [0.1, 2.0, 1.9], &[1]), 2);
        // Negative logits are multiplied.
        let mut l = [-1.0, -1.5];
        let mut s = Sampler::new(0.0, 0, 1.0, 2.0, None);
        assert_eq!(s.next(&mut l, &[0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let logits = [0.5, 3.0, 1.0, 2.5];
        let mut s = Sampler::new(1.0, 1, 1.0, 1.0, Some(1));
        for _ in 0..20 {
            assert_eq!(s.next(&mut logits.clone(), &[]), 1);
        }
        let draw = |seed| {
            let mut s = Sampler::new(1.5, 0, 0.95, 1.0, Some(seed));
            (0..30).map(|_| s.next(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let d = draw(7);
        assert!(d.iter().any(|&t| t != 1), "sampling at temperature 1.5 should not always pick the top token");
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.5 keeps only the first.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(1.0, 0, 0.5, 1.0, Some(3));
        for _ in 0..50 {
            assert_eq!(s.next(&mut logits.clone(), &[]), 0);
        }
    }

    #[test]
    fn parameters_are_validated() {
        assert!(SamplingParams { temperature: Some(-1.0), ..Default::default() }.validate().is_err());
        assert!(SamplingParams { top_p: Some(0.0), ..Default::default() }.validate().is_err());
        assert!(SamplingParams { repetition_penalty: Some(f32::NAN), ..Default::default() }.validate().is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }
}
