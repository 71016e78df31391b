// The official openai Node SDK against flux-worker, one scenario per run:
//   FLUX_BASE_URL=http://127.0.0.1:8000/v1 FLUX_API_KEY=... node openai-node.mjs <scenario>
// prints one JSON line with what the SDK returned (tests/test_node_sdks.py checks it).
import OpenAI from "openai";

import { imageSummary, main } from "./common.mjs";

const client = ({ baseURL, apiKey }) => new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const scenarios = {
  // Images API with stream: true: the SDK yields the SSE events as objects.
  async "images-stream"(cfg) {
    const stream = await client(cfg).images.generate({
      model: "gpt-image-1", prompt: "A cute cat 16:9", stream: true,
    });
    const events = [];
    for await (const event of stream) {
      const { b64_json: b64, ...rest } = event;
      events.push({ ...rest, image: imageSummary(b64) });
    }
    return { types: events.map((e) => e.type), events };
  },

  // A prompt Workers AI refuses, streamed: the SDK should raise the service's error.
  async "images-stream-refused"(cfg) {
    const types = [];
    try {
      const stream = await client(cfg).images.generate({
        model: "gpt-image-1", prompt: "nsfw-trigger", stream: true,
      });
      for await (const event of stream) types.push(event.type);
    } catch (error) {
      return { types, raised: { name: error.constructor.name, message: error.message,
                                error: error.error ?? null } };
    }
    return { types, raised: null };
  },

  // A size no OpenAI model makes, delivered exactly (flux-2-dev takes width/height).
  async "images-size"(cfg) {
    const result = await client(cfg).images.generate({
      model: "flux-2-dev", prompt: "A castle", size: "1792x1024", response_format: "b64_json",
    });
    const { data, ...rest } = result;
    return {
      ...rest,
      data: data.map(({ b64_json: b64, ...item }) => ({ ...item, image: imageSummary(b64) })),
    };
  },

  // n: 3, each data item carrying our `seed` extension field.
  async "images-n3"(cfg) {
    const result = await client(cfg).images.generate({
      model: "gpt-image-1", prompt: "A castle", n: 3,
    });
    return {
      count: result.data.length,
      seeds: result.data.map((item) => item.seed),
      b64_lengths: result.data.map((item) => item.b64_json?.length ?? null),
      distinct_images: new Set(result.data.map((item) => item.b64_json)).size,
    };
  },

  async "chat-stream"(cfg) {
    const stream = await client(cfg).chat.completions.create({
      model: "gpt-4o", messages: [{ role: "user", content: "A cute cat" }], stream: true,
    });
    const text = [];
    const finishReasons = [];
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      for (const choice of chunk.choices) {
        if (choice.delta?.content) text.push(choice.delta.content);
        if (choice.finish_reason) finishReasons.push(choice.finish_reason);
      }
    }
    return { chunks, text: text.join(""), finish_reasons: finishReasons };
  },

  async "responses-create"(cfg) {
    const response = await client(cfg).responses.create({
      model: "gpt-4o", input: "A cute cat", tools: [{ type: "image_generation" }],
    });
    const imageCall = response.output.find((item) => item.type === "image_generation_call");
    return {
      id: response.id,
      status: response.status,
      error: response.error ?? null,
      output_types: response.output.map((item) => item.type),
      output_text: response.output_text,
      usage: response.usage,
      image: imageSummary(imageCall?.result),
    };
  },

  async "responses-stream"(cfg) {
    const stream = await client(cfg).responses.create({
      model: "gpt-4o", input: "A cute cat", tools: [{ type: "image_generation" }], stream: true,
    });
    const types = [];
    const events = [];  // per event: where it belongs (output_index, the item's type)
    const sequence = [];
    const text = [];
    let completed = null;
    let image = null;
    for await (const event of stream) {
      types.push(event.type);
      events.push({ type: event.type, output_index: event.output_index ?? null,
                    item_type: event.item?.type ?? null });
      sequence.push(event.sequence_number);
      if (event.type === "response.output_text.delta") text.push(event.delta);
      if (event.type === "response.output_item.done" && event.item.type === "image_generation_call") {
        image = imageSummary(event.item.result);
      }
      if (event.type === "response.completed") completed = event.response;
    }
    return {
      types,
      events,
      sequence_numbers: sequence,
      text: text.join(""),
      image,
      completed: completed && {
        status: completed.status,
        output_types: completed.output.map((item) => item.type),
        usage: completed.usage,
      },
    };
  },

  // The SDK's stream helper checks the event protocol and assembles the final response.
  async "responses-stream-helper"(cfg) {
    const stream = client(cfg).responses.stream({
      model: "gpt-4o",
      input: [{ role: "user", content: [{ type: "input_text", text: "A red fox" }] }],
      tools: [{ type: "image_generation", output_format: "webp" }],
    });
    const final = await stream.finalResponse();
    const imageCall = final.output.find((item) => item.type === "image_generation_call");
    return {
      status: final.status,
      output_types: final.output.map((item) => item.type),
      output_text: final.output_text,
      image: imageSummary(imageCall?.result),
    };
  },
};

await main(scenarios);
