ALTER TABLE "desktops" ADD COLUMN "running_since" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "last_connected_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "connected_since" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "kept_alive_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "disconnected_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "disconnect_reason" text;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "clocks_exempt" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "clock_warnings" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
-- Desktops already running when this lands: their clocks count from when they became ready.
UPDATE "desktops" SET "running_since" = "ready_at" WHERE "state" = 'running';
