"""The warm-started policy that acts as mini-swe-agent's model (issue #26): a scripted teacher engine, the teacher's
real rollouts, a supervised fine-tune on their sampled tokens, and the measures of how the result acts."""
