ALTER TABLE "desktops" ALTER COLUMN "owner_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "pool" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "pool_settings" text;--> statement-breakpoint
ALTER TABLE "desktops" ADD CONSTRAINT "desktops_owner_check" CHECK ("desktops"."pool" or "desktops"."owner_id" is not null);