"""The model runtime shared by generators and discriminators: checkpoint loading (`checkpoint`), sampling and
detokenization on a loaded model (`hf`), the embedded default model (`embedded`), prompt framing (`chat`) and
the OpenAI-compatible HTTP client (`openai_http`). Heavy libraries (torch, transformers) load on first use."""
